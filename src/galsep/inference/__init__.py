"""Inference: the diffusion core (VE schedule, EDM denoisers, networks, training, samplers, joint MMPS
posterior with conjugate gradients), the Gaussian priors and the EM of DDPRISM (arXiv 2510.05205).

Import from the submodules (``galsep.inference.schedule``, ``.mmps``, ``.em``, ...); nothing is
re-exported here so that importing one part never pulls in the others.
"""

__all__: list[str] = []  # import from the submodules; nothing is re-exported here
