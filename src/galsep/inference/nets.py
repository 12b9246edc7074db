"""Noise-conditioned networks for EDM denoisers: a U-Net for single-channel images and an MLP for vectors.

Both take ``forward(x, log_sigma)`` with log_sigma of shape (B,), embed log sigma sinusoidally and
are free of in-place operations on their inputs, so ``torch.func.vjp`` and autograd work through them.
The adaLN-zero block follows azula's ``UNetBlock`` (modulation scale/shift/gate from the embedding,
last modulation layer scaled by 1e-2 so every block starts close to the identity yet all weights train).
The MLP is DDPRISM's manifold denoiser (arXiv 2510.05205).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galsep.errors import ConfigError

__all__ = ["sinusoidal_embedding", "NoiseEmbedding", "Modulation", "ResBlock", "AttentionBlock", "Level", "UNet", "MLP"]


def sinusoidal_embedding(x: Tensor, features: int, omega: float = 1e4) -> Tensor:
    """Transformer positional encoding of a scalar, (B,) -> (B, features); frequencies 1 down to 1/omega."""
    if features % 2:
        raise ValueError("features must be even")
    freqs = torch.exp(-math.log(omega) * torch.linspace(0, 1, features // 2, device=x.device, dtype=x.dtype))
    angles = x[..., None] * freqs
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class NoiseEmbedding(nn.Module):
    """log sigma (B,) -> (B, features): sinusoidal encoding then a two-layer SiLU MLP."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, features), nn.SiLU(), nn.Linear(features, features))

    def forward(self, log_sigma: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(log_sigma, self.features))


class Modulation(nn.Module):
    """Embedding (B, E) -> scale, shift, gate, each (B, C, 1, 1), small at initialisation (adaLN-zero)."""

    def __init__(self, emb_features: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(emb_features, 3 * channels)
        with torch.no_grad():
            self.linear.weight.mul_(1e-2)
            self.linear.bias.zero_()

    def forward(self, emb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, b, g = self.linear(F.silu(emb))[:, :, None, None].chunk(3, dim=1)
        return a, b, g


def _norm(channels: int) -> nn.GroupNorm:
    # affine-free: scale and shift come from the modulation
    return nn.GroupNorm(math.gcd(8, channels), channels, affine=False, eps=1e-5)


class ResBlock(nn.Module):
    """x + g * conv(SiLU(conv((1 + a) norm(x) + b))), (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, emb_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.mod = Modulation(emb_features, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        a, b, g = self.mod(emb)
        h = (1 + a) * self.norm(x) + b
        h = self.conv2(self.dropout(F.silu(self.conv1(h))))
        return x + g * h


class AttentionBlock(nn.Module):
    """Modulated multi-head self-attention over pixels, (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, emb_features: int, heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"channels {channels} not divisible by heads {heads} (network.channels, network.heads)")
        self.heads = heads
        self.dropout = dropout
        self.norm = _norm(channels)
        self.mod = Modulation(emb_features, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        B, C, H, W = x.shape
        a, b, g = self.mod(emb)
        h = (1 + a) * self.norm(x) + b
        qkv = self.qkv(h).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2)
        # contiguous (B, heads, HW, d) operands select the fused CPU kernel (6x faster than the strided fallback)
        q, k, v = qkv.contiguous().unbind(1)
        h = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + g * self.proj(h)


class Level(nn.Module):
    """``blocks`` residual blocks, each followed by attention when enabled; (B, C, H, W) -> same."""

    def __init__(self, channels: int, blocks: int, attention: bool, heads: int, emb_features: int,
                 dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers.append(ResBlock(channels, emb_features, dropout))
            if attention:
                layers.append(AttentionBlock(channels, emb_features, heads, dropout))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, emb)
        return x


class UNet(nn.Module):
    """U-Net for single-channel images conditioned on log sigma.

    Level i works at resolution H / 2^i with ``channels[i]`` channels and ``blocks[i]`` residual blocks
    on the way down and again on the way up (joined by a skip connection); levels listed in
    ``attention_levels`` add self-attention after each residual block.

    Args:
        channels: channels per level; H and W must be divisible by 2^(len(channels) - 1).
        blocks: residual blocks per level (one int for all).
        attention_levels: indices of levels with attention (coarse ones: attention is quadratic in pixels).
        heads: attention heads.
        emb_features: size of the noise embedding.
        dropout: dropout rate inside blocks.
    """

    def __init__(self, channels: Sequence[int] = (16, 32), blocks: int | Sequence[int] = 2,
                 attention_levels: Sequence[int] = (1,), heads: int = 1, emb_features: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        channels = tuple(channels)
        blocks = (blocks,) * len(channels) if isinstance(blocks, int) else tuple(blocks)
        if len(blocks) != len(channels):
            raise ValueError("blocks and channels must have the same length")
        if any(not 0 <= i < len(channels) for i in attention_levels):
            raise ValueError(f"attention_levels {attention_levels} out of range for {len(channels)} levels")
        self.channels = channels
        self.embedding = NoiseEmbedding(emb_features)
        self.stem = nn.Conv2d(1, channels[0], 3, padding=1)
        level = functools.partial(Level, heads=heads, emb_features=emb_features, dropout=dropout)
        n = len(channels)
        self.down = nn.ModuleList(level(channels[i], blocks[i], i in attention_levels) for i in range(n))
        self.up = nn.ModuleList(level(channels[i], blocks[i], i in attention_levels) for i in range(n))
        self.downsample = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1) for i in range(n - 1))
        self.upsample = nn.ModuleList(nn.Conv2d(channels[i + 1], channels[i], 3, padding=1) for i in range(n - 1))
        self.merge = nn.ModuleList(nn.Conv2d(2 * channels[i], channels[i], 1) for i in range(n - 1))
        self.head = nn.Sequential(_norm(channels[0]), nn.SiLU(), nn.Conv2d(channels[0], 1, 3, padding=1))

    def forward(self, x: Tensor, log_sigma: Tensor) -> Tensor:
        """x (B, H, W), log_sigma (B,) -> (B, H, W)."""
        n = len(self.channels)
        if x.shape[-1] % 2 ** (n - 1) or x.shape[-2] % 2 ** (n - 1):
            raise ValueError(f"image size {tuple(x.shape[-2:])} not divisible by {2 ** (n - 1)}")
        emb = self.embedding(log_sigma)
        h = self.stem(x[:, None])
        skips = []
        for i in range(n):
            h = self.down[i](h, emb)
            if i < n - 1:
                skips.append(h)
                h = self.downsample[i](h)
        for i in reversed(range(n)):
            if i < n - 1:
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
                h = self.merge[i](torch.cat((h, skips[i]), dim=1))
            h = self.up[i](h, emb)
        return self.head(h)[:, 0]


class MLP(nn.Module):
    """MLP for vectors conditioned on log sigma: the noise embedding is concatenated to every layer's input.

    Hidden layers are Linear -> SiLU -> LayerNorm (DDPRISM's manifold denoiser), then a linear output.

    Args:
        features: vector size D.
        hidden: hidden widths.
        emb_features: size of the noise embedding.
        dropout: dropout after each hidden layer.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (256, 256, 256), emb_features: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = NoiseEmbedding(emb_features)
        widths = (features, *hidden)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(w_in + emb_features, w_out), nn.SiLU(), nn.LayerNorm(w_out), nn.Dropout(dropout))
            for w_in, w_out in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(widths[-1] + emb_features, features)

    def forward(self, x: Tensor, log_sigma: Tensor) -> Tensor:
        """x (B, D), log_sigma (B,) -> (B, D)."""
        emb = self.embedding(log_sigma)
        h = x
        for layer in self.layers:
            h = layer(torch.cat((h, emb), dim=-1))
        return self.out(torch.cat((h, emb), dim=-1))
