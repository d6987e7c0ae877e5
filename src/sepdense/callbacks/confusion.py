"""Draws the validation and test confusion matrices to TensorBoard as figures."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files and TensorBoard
import matplotlib.pyplot as plt
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor


def confusion_figure(matrix: Tensor | np.ndarray, class_names: Sequence[str], title: str) -> plt.Figure:
    """A row-normalised confusion matrix (rows: true class) with the raw counts written in each cell."""
    counts = torch.as_tensor(matrix).cpu().numpy()
    rates = counts / counts.sum(1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, int(count), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


class ConfusionMatrixFigure(pl.Callback):
    """After each validation epoch and after testing, adds the module's confusion matrix as a TensorBoard image."""

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        matrix = getattr(pl_module, "confusion", {}).get(stage)
        if matrix is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                fig = confusion_figure(
                    matrix, pl_module.class_names, f"{stage} confusion (epoch {trainer.current_epoch})"
                )
                logger.experiment.add_figure(f"{stage}/confusion_matrix", fig, global_step=trainer.global_step)
                plt.close(fig)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "test")
