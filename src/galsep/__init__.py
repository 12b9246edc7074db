"""galsep: separate galaxies from contaminating light with diffusion priors learned by EM."""

__all__ = ["__version__"]

__version__ = "0.1.0"
