"""Separation methods, one module each, registered by subclassing :class:`~galsep.methods.base.Method`.

    ddprism      joint MMPS posterior under the EM-learned diffusion priors (DDPRISM, arXiv 2510.05205)
    gibbs        DDPRISM's Gibbs alternative with the same priors (its appendix B)
    basis        BASIS annealed Langevin with the same priors' scores (arXiv 2002.07942)
    pcpca        probabilistic contrastive PCA (target source only)
    clvm_linear  contrastive latent variable model, linear
    clvm_vae     contrastive latent variable model, VAE
    nes          Neural Egg Separation (deterministic; arXiv 1811.12739)
    surf         SURF, unsupervised remixing flow (generative; arXiv 2606.04921)

Adding a method: a new module here with a ``Method`` subclass, its settings block in
workflow/schemas/config.schema.yaml (under ``methods``, with defaults), and its tests.
"""

from __future__ import annotations

import importlib
import pkgutil

from galsep.methods.base import Contrast, Method

__all__ = ["Contrast", "Method", "get", "registry"]


def registry() -> dict[str, type[Method]]:
    """Every method: the subclasses of :class:`Method` with a name, after importing this package's modules
    (a subclass defined elsewhere, a test's for instance, is registered by being defined)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type[Method]] = {}
    todo = list(Method.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        name = getattr(cls, "name", None)
        if name is None:
            continue
        if name in found and found[name] is not cls:
            raise TypeError(f"two methods are named {name!r}: {found[name].__qualname__} and {cls.__qualname__}")
        found[name] = cls
    return dict(sorted(found.items()))


def get(name: str) -> Method:
    """An instance of the method ``name``; a clear error lists the registered ones."""
    from galsep.errors import ConfigError

    methods = registry()
    if name not in methods:
        raise ConfigError(f"unknown method {name!r}: one of {', '.join(methods)}")
    return methods[name]()
