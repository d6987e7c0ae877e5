"""Draws each validation epoch's and the test's confusion matrix as a figure, for every tracker that holds images."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytorch_lightning as pl

from sepdense.plotting import confusion_figure
from sepdense.tracking import log_figure


class ConfusionMatrixFigure(pl.Callback):
    """Adds ``val/confusion_matrix`` after every validation epoch and ``test/confusion_matrix`` after testing.

    TensorBoard shows them under IMAGES, W&B as media, MLflow as artifacts; the CSV logger has no images.
    Drawn in ``on_validation_end`` / ``on_test_end``: those run after the LightningModule's own
    epoch-end hook has computed the matrix, so each figure shows the epoch it is titled with
    (a callback's epoch-end hook runs before the module's and would show the previous epoch).
    """

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        matrix = getattr(pl_module, "confusion", {}).get(stage)
        if matrix is None or trainer.sanity_checking or not trainer.is_global_zero or not trainer.loggers:
            return
        when = f"after epoch {trainer.current_epoch + 1}" if stage == "val" else "best checkpoint"
        fig = confusion_figure(matrix.numpy(), pl_module.class_names, f"{stage} confusion, {when}")
        for logger in trainer.loggers:
            log_figure(logger, f"{stage}/confusion_matrix", fig, trainer.global_step)
        plt.close(fig)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._draw(trainer, pl_module, "test")
