"""Matplotlib figures shared by TensorBoard logging, the reports and the benchmark: the confusion matrix, conv
colours, and saving a figure (as every other file is written: never through a symbolic link)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files and TensorBoard
import matplotlib.pyplot as plt
import numpy as np

from sepdense.models import ordered_conv_types
from sepdense.tables import write_file


def conv_colors(names: Iterable[str] = ()) -> dict[str, str]:
    """One colour per conv type, fixed by the registry order (baseline first), so every figure agrees."""
    palette = plt.get_cmap("tab10").colors
    return {
        conv: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, conv in enumerate(ordered_conv_types(names))
    }


def confusion_figure(counts: np.ndarray, class_names: Sequence[str], title: str) -> plt.Figure:
    """A row-normalised confusion matrix (rows: true class) with the raw counts written in each cell."""
    counts = np.asarray(counts)
    rates = counts / counts.sum(1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, int(count), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: Path, inside: Path | None = None, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG to ``path`` (see ``tables.write_file``: ``inside`` is the folder it must land in) and
    close it."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi)
    plt.close(fig)
    write_file(path, png.getvalue(), inside)
