"""DDPRISM's 1-D manifold experiments (paper section 5.1, appendix C, table 1) as a pipeline experiment.

Sources are points on random smooth 1-D manifolds in R^5 (one manifold per source, smoothness 3, 4, 5),
observed through random 3x5 projections with unit-norm rows and Gaussian noise (sigma 0.01):

    contrastive   view v holds sources 1..v with one projection shared by the sources; settings
                  ``contrastive-2`` and ``contrastive-3`` evaluate the joint posterior given view 2 or 3
    mixed-F       two views, view v holds source v fully and the other at fraction F (shared projection)
    mixed-separate  two views, both sources fully present, one projection per source

Modules, one job each:
    settings  names of settings and datasets and what they mean; the methods and where they apply
    data      manifold generation, the views, the observations of a setting or an EM stage
    models    MLP denoisers and the serialised priors (Gaussian or diffusion) of the EM stages
    em        the in-process EM driver: Gaussian start, then diffusion laps (joint or Gibbs E-steps)
    draws     posterior and prior draws of every method for one setting (baselines fitted here)
    metrics   PSNR (max spread 4), Sinkhorn divergence, PQMass p-value
    paper     the paper's table-1 numbers
    table     table.json and table.md from every method's metrics
The command line (``python -m galsep.manifold STAGE``) runs one stage; ``rules/manifold.smk`` wires them.
"""

__all__: list[str] = []  # import from the submodules; nothing is re-exported here
