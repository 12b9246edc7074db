"""The square's symmetries (galsep.inference.symmetry) that dihedral training augments with."""

from __future__ import annotations

import pytest
import torch

from galsep.inference.symmetry import ORDER, random_elements, turn

from .test_training_toy import d4

pytestmark = pytest.mark.usefixtures("single_thread")


def test_turn_applies_a_uniform_symmetry_of_the_square_to_each_sample() -> None:
    g = torch.Generator().manual_seed(0)
    # one asymmetric 5x5 image (distinct pixel values: its 8 images are distinct), 4000 copies, a channel axis
    base = torch.randperm(25, generator=g).float().reshape(1, 5, 5)
    x = base.expand(4000, 1, 5, 5).clone()
    y = turn(x, random_elements(4000, torch.Generator().manual_seed(1)))
    images = torch.stack(d4(base))  # (8, 1, 5, 5)
    assert len({tuple(m.flatten().tolist()) for m in images}) == ORDER
    match = (y[:, None] == images[None]).flatten(2).all(-1)  # (4000, 8)
    assert (match.sum(1) == 1).all()  # every output is exactly one symmetry image of its input
    counts = match.sum(0).double()
    # uniform on 8 elements: each count ~ Binomial(4000, 1/8), sd 21; 5 sd either side of 500
    assert ((counts - 500).abs() < 105).all(), counts
    assert torch.equal(y, turn(x, random_elements(4000, torch.Generator().manual_seed(1))))  # seeded
    with pytest.raises(ValueError, match="square"):
        turn(torch.zeros(3, 1, 4, 5), torch.zeros(3, dtype=torch.long))
