"""PNG figures of the evaluations, made and saved one way for every generator.

Figures are drawn on matplotlib's Agg canvas without pyplot: no display is needed, no global list of open
figures can leak, and an interactive backend a user chose is left alone. A PNG is rendered in memory, then
written atomically (a failed render leaves no file), without metadata (matplotlib's own names its version), so
the same figure gives the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsci.io.atomic import write_bytes_atomic


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize=None, dpi=None, **subplots_kw):
    """``(figure, axes)`` like ``pyplot.subplots``, on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **subplots_kw)


def png_bytes(fig, *, dpi=None, tight: bool = False) -> bytes:
    """The figure as PNG, without metadata; ``dpi`` None: the figure's own, ``tight``: cropped to its content."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or "figure", bbox_inches="tight" if tight else None,
                metadata={"Software": None})
    return buf.getvalue()


def save_png(fig, path: str | Path, *, dpi=None, tight: bool = False) -> None:
    write_bytes_atomic(path, png_bytes(fig, dpi=dpi, tight=tight))


@dataclass
class Panel:
    """One 2D image of a grid; ``image`` None leaves the panel empty (its title and frame still drawn)."""

    image: np.ndarray | None
    title: str | None = None
    cmap: str = "gray"
    vmin: float | None = None
    vmax: float | None = None
    ylabel: str | None = None
    title_color: str | None = None


def image_grid(rows: list[list[Panel]], *, figsize, dpi=None, fontsize: float = 8, ylabel_size: float = 8,
               frame: bool = False, suptitle: str | None = None, tight_layout: bool = False,
               **imshow_kw: Any):
    """A figure of image panels, one list of :class:`Panel` per row (rows of equal length). ``frame``: keep
    each panel's box (ticks removed) rather than hiding its axes; ``imshow_kw`` go to every ``imshow``."""
    fig, axes = new_figure(len(rows), len(rows[0]), figsize=figsize, dpi=dpi, squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r, c]
            if panel.image is not None:
                ax.imshow(panel.image, cmap=panel.cmap, vmin=panel.vmin, vmax=panel.vmax, **imshow_kw)
            if frame:
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.set_axis_off()
            if panel.title is not None:
                color = {} if panel.title_color is None else {"color": panel.title_color}
                ax.set_title(panel.title, fontsize=fontsize, **color)
            if panel.ylabel is not None:
                ax.set_ylabel(panel.ylabel, fontsize=ylabel_size)
    if suptitle is not None:
        fig.suptitle(suptitle, fontsize=9)
    if tight_layout:
        fig.tight_layout()
    return fig


def save_image_grid(path: str | Path, rows: list[list[Panel]], *, png_dpi=None, tight: bool = False,
                    **grid_kw: Any) -> None:
    """:func:`image_grid` saved as a PNG (``png_dpi``/``tight`` as in :func:`save_png`)."""
    save_png(image_grid(rows, **grid_kw), path, dpi=png_dpi, tight=tight)
