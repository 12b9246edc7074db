"""Peer methods of DDPRISM, run on the same observations for comparison (issue 7).

Every method works on a batch of observations of K additive sources,

    y_i = sum_k A_ik x_ik + n_i,   n_i ~ N(0, diag(variance_i)),

given as ``y`` (N, *Sy), ``operators`` (K operators from :mod:`galsep.data.operators`, each mapping
(N, *S) -> (N, *Sy), with a zero coefficient or matrix where source k is absent from a view) and
``variance`` (N, *Sy) - the same arguments as :func:`galsep.inference.mmps.sample_joint_posterior`.
Images (PixelOperator) and vectors (DenseOperator) are both supported unless a module says otherwise.

Modules:
    pcpca  probabilistic contrastive PCA with incomplete data (target source only)
    clvm   contrastive latent variable models, linear (exact marginal likelihood) and VAE (ELBO)
    basis  BASIS annealed Langevin posterior sampling with the learned diffusion priors' scores
    nes    Neural Egg Separation: iterative masking regressor, images only
"""

__all__: list[str] = []  # import from the submodules; nothing is re-exported here
