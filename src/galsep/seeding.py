"""Seeds derived from the config seed and a stage's identity, so every draw is reproducible."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["derive_seed", "generator", "numpy_generator", "pick_device"]


def derive_seed(seed: int, *key: object) -> int:
    """A 63-bit seed from the config seed and any labels (stage, source, lap, shard)."""
    digest = hashlib.sha256(repr((seed, *key)).encode()).hexdigest()
    return int(digest[:15], 16)


def generator(seed: int, *key: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded by :func:`derive_seed`."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *key))


def numpy_generator(seed: int, *key: object) -> np.random.Generator:
    """A numpy generator seeded by :func:`derive_seed`: one stream per key, e.g.
    ``("synthetic", "tile", index)``, ``("cutouts", "randoms", tile)`` or ``("views", view)``."""
    return np.random.default_rng(derive_seed(seed, *key))


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
