"""One figure style for the whole book (seaborn), and small helpers for image grids."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns
import torch

PALETTE = "colorblind"


def set_style() -> None:
    """Apply the book's figure style; every chapter calls this once."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "figure.figsize": (6.4, 4.0),
                         "legend.frameon": False})


def colors(n: int):
    """``n`` colours of the book's palette."""
    return sns.color_palette(PALETTE, n)


def to_image(x: torch.Tensor, shape=None):
    """An image in [-1, 1], shape ``(C, H, W)`` or flattened with ``shape`` given, as an HxWxC numpy array in [0, 1]."""
    x = x.detach().float().cpu()
    if shape is not None:
        x = x.reshape(shape)
    img = ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[-1] == 1 else img


def image_grid(images, nrow: int, titles=None, shape=None, axes_size: float = 1.1, cmap="gray"):
    """Show images (a tensor ``(m, C, H, W)`` or a list) in a grid with ``nrow`` rows; returns the figure."""
    images = list(images)
    ncol = -(-len(images) // nrow)
    fig, axes = plt.subplots(nrow, ncol, figsize=(axes_size * ncol, axes_size * nrow), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(to_image(images[k], shape), cmap=cmap, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[k], fontsize=7)
    fig.tight_layout(pad=0.2)
    return fig
