"""A small, legible DDPM++-style U-Net: the raw network F inside :class:`paperlib.edm.Precond`.

It follows the layout of the DDPM++ network that EDM trains on CIFAR-10 (Karras et al. 2022,
"SongUNet"), scaled down: residual blocks (GroupNorm, SiLU, 3x3 conv, noise embedding added
between the two convolutions, skip scaled by ``1/sqrt(2)``), average-pool downsampling,
nearest-neighbour upsampling, single-head self-attention at chosen resolutions, a sinusoidal
("positional") or random Fourier embedding of ``c_noise``, and an optional class embedding
(``num_classes > 0``; used by the dummy-class baseline of Sec. 5). The paper's EDM-1K / EDM-50K
models are this architecture at 32x32 with ``model_channels=128, channel_mult=(2, 2, 2),
num_blocks=4, attn_resolutions=(16,)`` (~56M parameters); the companion's CPU profile uses much
smaller settings (see :func:`count_parameters`).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _groups(channels: int, max_groups: int = 32, min_per_group: int = 4) -> int:
    """The largest divisor of ``channels`` that is ``<= min(max_groups, channels // min_per_group)``."""
    g = max(1, min(max_groups, channels // min_per_group))
    while channels % g:
        g -= 1
    return g


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels), channels, eps=1e-6)


def _zero_init(layer: nn.Module, scale: float = 1e-5) -> nn.Module:
    """Nearly-zero initial weights, so that a new residual branch (or F itself) starts as ~identity/0."""
    with torch.no_grad():
        layer.weight.mul_(scale)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


class NoiseEmbedding(nn.Module):
    """Embed the scalar ``c_noise`` as ``[cos(c w_k), sin(c w_k)]``.

    ``kind="positional"``: geometric frequencies ``w_k = (1/max_positions)^(k/(K-1))`` (DDPM++);
    ``kind="fourier"``: fixed random frequencies ``2 pi N(0, scale^2)`` (NCSN++).
    """

    def __init__(self, channels: int, kind: str = "positional", max_positions: int = 10000, scale: float = 16.0):
        super().__init__()
        if channels % 2 or channels < 2:
            raise ValueError(f"noise embedding channels must be even and >= 2, got {channels}")
        half = channels // 2
        if kind == "positional":
            freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        elif kind == "fourier":
            g = torch.Generator().manual_seed(0)  # fixed, so the frequencies are part of the architecture
            freqs = 2 * math.pi * scale * torch.randn(half, generator=g)
        else:
            raise ValueError(f"embedding must be 'positional' or 'fourier', got {kind!r}")
        self.register_buffer("freqs", freqs)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = c.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class ResBlock(nn.Module):
    """``x -> (x + conv(silu(norm(conv(silu(norm(x))) + A emb)))) / sqrt(2)``, then optional attention."""

    def __init__(self, cin: int, cout: int, emb_channels: int, attention: bool = False, dropout: float = 0.0):
        super().__init__()
        self.norm0, self.conv0 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb_channels, cout)
        self.norm1, self.conv1 = _norm(cout), _zero_init(nn.Conv2d(cout, cout, 3, padding=1))
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.attention = attention
        if attention:
            self.norm2 = _norm(cout)
            self.qkv = nn.Conv2d(cout, 3 * cout, 1)
            self.proj = _zero_init(nn.Conv2d(cout, cout, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = h + self.affine(emb)[:, :, None, None]
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        x = (h + self.skip(x)) / math.sqrt(2)
        if self.attention:
            b, c, hh, ww = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(b, 3, c, hh * ww).unbind(1)
            w = torch.softmax(torch.einsum("bcq,bck->bqk", q, k) / math.sqrt(c), dim=-1)
            a = torch.einsum("bqk,bck->bcq", w, v).reshape(b, c, hh, ww)
            x = (x + self.proj(a)) / math.sqrt(2)
        return x


class UNet(nn.Module):
    """DDPM++-like U-Net ``F(x_in, c_noise, class_labels=None) -> (b, in_channels, H, W)``.

    ``channel_mult[l]`` sets the width ``model_channels * channel_mult[l]`` at resolution
    ``img_resolution / 2^l``; each level has ``num_blocks`` residual blocks on the way down and
    ``num_blocks + 1`` on the way up (taking the skip connections); the lowest level has two more
    blocks (the first with attention). ``attn_resolutions`` lists the resolutions (in pixels) whose
    blocks use self-attention. ``img_resolution`` must be divisible by ``2^(len(channel_mult) - 1)``
    (e.g. 16, 28, 32, 64 with three levels).
    """

    def __init__(self, img_resolution: int, in_channels: int = 1, model_channels: int = 32,
                 channel_mult=(1, 2, 2), num_blocks: int = 2, attn_resolutions=(8,), dropout: float = 0.0,
                 num_classes: int = 0, embedding: str = "positional", channel_mult_emb: int = 4):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        levels = len(channel_mult)
        if levels < 1 or any(m < 1 for m in channel_mult):
            raise ValueError(f"channel_mult must be a non-empty list of positive integers, got {channel_mult}")
        if img_resolution < 1 or img_resolution % (2 ** (levels - 1)):
            raise ValueError(f"img_resolution={img_resolution} must be divisible by 2^(len(channel_mult)-1)"
                             f" = {2 ** (levels - 1)}")
        if in_channels < 1 or model_channels < 2 or model_channels % 2 or num_blocks < 1 or num_classes < 0:
            raise ValueError("need in_channels >= 1, an even model_channels >= 2, num_blocks >= 1, num_classes >= 0")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.img_resolution, self.in_channels, self.num_classes = img_resolution, in_channels, num_classes
        attn_resolutions = {int(r) for r in attn_resolutions}
        emb = model_channels * channel_mult_emb

        # Noise (and class) embedding -> a vector of size `emb` fed to every block.
        self.map_noise = NoiseEmbedding(model_channels, embedding)
        self.map_label = nn.Embedding(num_classes, model_channels) if num_classes else None
        self.map = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU())

        # Encoder: input conv, then per level [downsample] + num_blocks blocks.
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, c = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                blocks.append(ResBlock(c, model_channels * mult, emb, res in attn_resolutions, dropout))
                c = model_channels * mult
                skips.append(c)
            self.down.append(blocks)
            if level < levels - 1:
                skips.append(c)  # the downsampled activation is a skip too (DDPM++)

        # Bottleneck at the lowest resolution.
        self.mid = nn.ModuleList([ResBlock(c, c, emb, True, dropout), ResBlock(c, c, emb, False, dropout)])

        # Decoder: per level (num_blocks + 1) blocks taking skips, then upsample.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            blocks = nn.ModuleList()
            for _ in range(num_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), model_channels * mult, emb, res in attn_resolutions, dropout))
                c = model_channels * mult
            self.up.append(blocks)
        assert not skips
        self.norm_out = _norm(c)
        self.conv_out = _zero_init(nn.Conv2d(c, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] != self.img_resolution \
                or x.shape[3] != self.img_resolution:
            raise ValueError(f"x must have shape (b, {self.in_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}), got {tuple(x.shape)}")
        e = self.map_noise(c_noise.reshape(-1).expand(x.shape[0]) if c_noise.numel() == 1 else c_noise)
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError("class_labels is required: this U-Net is class-conditional")
            e = e + self.map_label(class_labels.reshape(-1).long())
        e = self.map(e.to(x.dtype))

        h = self.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, e)
                skips.append(h)
            if level < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
                skips.append(h)
        for block in self.mid:
            h = block(h, e)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), e)
            if i < len(self.up) - 1:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.conv_out(F.silu(self.norm_out(h)))
