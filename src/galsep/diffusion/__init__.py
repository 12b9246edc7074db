"""Diffusion core: VE schedule, EDM denoisers, networks, training and samplers (DDPRISM sections 3-4).

Import from the submodules (``galsep.diffusion.schedule``, ``.samplers``, ...); nothing is re-exported
here so that importing one part never pulls in the others.
"""
