"""One figure style for the whole book (seaborn), figure sizes that fit the page, and the plots that
several chapters draw: the regime plot of Fig. 3 / Fig. 8, the quality-memorization plane of Fig. 9
and framed sample grids (Fig. 10, 17-19).

**Sizes.** The book's text column shows about 680 pixels; figures are drawn at :data:`DPI` pixels per
inch, so a figure of width :data:`WIDTH` inches is shown at (nearly) its natural size and its fonts
stay at the sizes set here. A figure that needs more room is drawn at :data:`WIDE` and its cell is
tagged ``full-width``, which gives it the width of the page's main area. Use :func:`figure`.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

PALETTE = "colorblind"
#: Pixels per inch of the figures shown on the pages.
DPI = 100
#: Width (inches) of a figure that fits the text column; of one in a ``full-width`` cell.
WIDTH = 6.8
WIDE = 10.0
#: Smallest font size (points) used in figures: legible at the column's width.
MIN_FONT = 9


def set_style() -> None:
    """Apply the book's figure style; every chapter calls this once."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.9)
    plt.rcParams.update({
        "figure.dpi": DPI, "savefig.dpi": 2 * DPI, "figure.figsize": (WIDTH, 0.6 * WIDTH),
        "legend.frameon": False, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
        "xtick.labelsize": MIN_FONT, "ytick.labelsize": MIN_FONT, "legend.fontsize": MIN_FONT,
        "legend.title_fontsize": MIN_FONT, "figure.titlesize": 12,
    })


def figure(nrows: int = 1, ncols: int = 1, *, height: float | None = None, wide: bool = False, **kwargs):
    """``plt.subplots`` at the book's width (:data:`WIDTH`, or :data:`WIDE` for a ``full-width`` cell).

    ``height``: inches (default: 0.6 of the width for one row, 0.42 of it per row otherwise).
    """
    width = WIDE if wide else WIDTH
    if height is None:
        height = 0.6 * width / max(1, ncols) * 1.6 if nrows == 1 else 0.42 * width * nrows / max(1, ncols) * 1.4
        height = min(max(height, 2.4), 9.0)
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


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
    fig, axes = plt.subplots(nrow, ncol, figsize=(axes_size * ncol, axes_size * nrow), squeeze=False,
                             layout="constrained")
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(to_image(images[k], shape), cmap=cmap, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[k], fontsize=MIN_FONT)
    return fig


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def mosaic(images, ncols: int, marked=None, color=(0.85, 0.1, 0.1), border: int = 2, gap: int = 2,
           groups: int = 1) -> np.ndarray:
    """One RGB array (values in [0, 1]) holding ``images`` in rows of ``ncols``; image ``i`` gets a
    coloured frame of ``border`` pixels where ``marked[i]`` (else a white one). With ``groups = g`` the
    images are taken ``g`` at a time and each group is framed together (e.g. ``g = 2`` for
    [sample | nearest training image] pairs, ``marked`` then has one flag per group)."""
    tiles = [_rgb(to_image(im)) for im in images]
    if not tiles:
        raise ValueError("images is empty")
    if len(tiles) % groups:
        raise ValueError(f"the number of images ({len(tiles)}) is not a multiple of groups={groups}")
    h, w = tiles[0].shape[:2]
    sep = np.ones((h, 1, 3))
    units = [np.concatenate([x for t in tiles[i:i + groups] for x in (t, sep)][:-1], axis=1)
             for i in range(0, len(tiles), groups)]
    marked = [False] * len(units) if marked is None else [bool(m) for m in marked]
    if len(marked) != len(units):
        raise ValueError(f"marked has {len(marked)} flags for {len(units)} groups")
    framed = []
    for u, m in zip(units, marked):
        f = np.pad(u, ((border, border), (border, border), (0, 0)), constant_values=1.0)
        if m:
            c = np.asarray(color, dtype=float)
            f[:border], f[-border:], f[:, :border], f[:, -border:] = c, c, c, c
        framed.append(np.pad(f, ((gap, gap), (gap, gap), (0, 0)), constant_values=1.0))
    blank = np.ones_like(framed[0])
    rows = []
    for r in range(0, len(framed), ncols):
        row = framed[r:r + ncols]
        row += [blank] * (ncols - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def show_mosaic(ax, images, ncols: int, marked=None, title: str = "", **kwargs) -> None:
    """Draw :func:`mosaic` on ``ax`` without axes (pixels are shown unsmoothed)."""
    ax.imshow(mosaic(images, ncols, marked, **kwargs), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def regime_plot(ax, zone, title: str = "", *, low: float = 0.05, gaps=None, annotate: bool = True) -> None:
    """The paper's Fig. 3 / Fig. 8 for a :class:`paperlib.regimes.DangerZone`: ``W`` and ``C`` against
    ``sigma`` with the small / medium / large regimes shaded (medium: both curves above ``low``), the
    danger zone, the crossing, and optional ``gaps``: ``{label: (lo, hi)}`` intervals drawn as bands."""
    from . import regimes

    c = colors(4)
    sg = zone.sigmas.cpu().numpy()
    W, C = zone.weight.cpu().numpy(), zone.coverage.cpu().numpy()
    lo_m = regimes.crossing(sg, C, low)
    hi_m = regimes.crossing(sg, W, low)
    lo_m = float(sg.min()) if math.isnan(lo_m) else lo_m
    hi_m = float(sg.max()) if math.isnan(hi_m) else hi_m
    ax.axvspan(sg.min(), lo_m, color=c[0], alpha=0.07, lw=0)
    ax.axvspan(lo_m, hi_m, color="gray", alpha=0.08, lw=0)
    ax.axvspan(hi_m, sg.max(), color=c[2], alpha=0.07, lw=0)
    if not zone.empty:
        ax.axvspan(zone.lower, zone.upper, color=c[3], alpha=0.22, lw=0, label="danger zone")
    for (label, (g0, g1)), col in zip((gaps or {}).items(), colors(len(gaps or {}) + 4)[4:]):
        ax.axvspan(g0, g1, facecolor="none", edgecolor=col, hatch="//", lw=1.2, label=label)
    ax.plot(sg, W, "-o", ms=2.5, color=c[0], label=r"max posterior weight $W(\sigma)$")
    ax.plot(sg, C, "-s", ms=2.5, color=c[1], label=r"shell coverage $C(\sigma)$")
    if zone.crossing is not None:
        ax.plot([zone.crossing], [zone.crossing_value], "k*", ms=10, label=rf"crossing, $\sigma$ = {zone.crossing:.2f}")
    ax.axhline(zone.weight_level, color="gray", lw=0.7, ls=":")
    if annotate:
        for x_txt, txt in ((math.sqrt(sg.min() * lo_m), r"small $\sigma$"), (math.sqrt(hi_m * sg.max()), r"large $\sigma$")):
            ax.text(x_txt, 1.08, txt, ha="center", fontsize=MIN_FONT)
        if not zone.empty:
            ax.text(math.sqrt(zone.lower * zone.upper), 1.08, "danger\nzone", ha="center", fontsize=MIN_FONT,
                    color=c[3], fontweight="bold")
    ax.set(xscale="log", ylim=(-0.05, 1.25), xlabel=r"noise level $\sigma$", ylabel="weight / coverage")
    if title:
        ax.set_title(title)
    ax.legend(loc="center left")


def pareto_plot(ax, points, names, colors_, title: str = "quality vs memorization") -> list[int]:
    """Fig. 9's plane: ``points`` ``[(memorized %, patch-FD), ...]`` of the models ``names`` in
    ``colors_``, with the Pareto frontier (:func:`paperlib.gaps.pareto_front`) ringed and joined, so a
    frontier of a single model is visible too. Returns the frontier's indices, by memorization."""
    from . import gaps

    front = sorted(gaps.pareto_front(points), key=lambda i: points[i][0])
    for (x, y), name, c in zip(points, names, colors_):
        ax.scatter(x, y, color=c, s=50, zorder=3)
        ax.annotate(name, (x, y), fontsize=MIN_FONT, xytext=(4, 4), textcoords="offset points")
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--o", lw=1, ms=11, mfc="none",
            label="Pareto frontier")
    ax.set(xlabel="memorized samples (%)", ylabel="patch-FD (not FID)", title=title)
    ax.legend()
    return front
