"""galsep: separate galaxies from contaminating light with diffusion priors learned by EM."""

__version__ = "0.1.0"
