"""The LightningModule: cross-entropy training of any image classifier, with torchmetrics per stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from sepdense.errors import UserError
from sepdense.optim import param_groups
from sepdense.runtime import prepare_network, to_layout

STAGES = ("train", "val", "test")


def summary_metrics(num_classes: int, average: str) -> MetricCollection:
    """Accuracy (over all images) and precision, recall and F1 averaged as ``average`` ('macro' or 'none')."""
    metrics = {
        "precision": MulticlassPrecision(num_classes, average=average),
        "recall": MulticlassRecall(num_classes, average=average),
        "f1": MulticlassF1Score(num_classes, average=average),
    }
    if average != "none":
        metrics["acc"] = MulticlassAccuracy(num_classes, average="micro")
    return MetricCollection(metrics)


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite."""


class ImageClassifier(pl.LightningModule):
    """Wraps ``net`` with a (label-smoothed) cross-entropy loss, the optimizer, the LR schedule and the metrics.

    Logged per stage (``train/``, ``val/``, ``test/``): loss, acc, macro precision / recall / f1;
    for val and test also per-class precision / recall / f1 (``val/f1/cat``) and the confusion
    matrix (kept in ``self.confusion`` and drawn to TensorBoard).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None,
        class_names: Sequence[str],
        label_smoothing: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.class_names = list(class_names)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.channels_last = channels_last
        self.net = prepare_network(net, channels_last)
        num_classes = len(self.class_names)
        # One set of metric objects per stage, so Lightning computes and resets each at its own epoch end
        # (nn.ModuleDict cannot be keyed 'train': that name is nn.Module.train).
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", summary_metrics(num_classes, "macro").clone(prefix=f"{stage}/"))
            setattr(self, f"{stage}_loss", MeanMetric())
        for stage in ("val", "test"):
            setattr(self, f"{stage}_per_class", summary_metrics(num_classes, "none"))
            setattr(self, f"{stage}_confusion", MulticlassConfusionMatrix(num_classes))
        self.confusion: dict[str, Tensor] = {}

    def forward(self, images: Tensor) -> Tensor:
        return self.net(to_layout(images, self.channels_last))

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"The {stage} loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}. "
                f"Lower the learning rate (optimizer.lr) or use trainer.precision=32-true; "
                f"checkpoints already saved are kept."
            )
        preds = logits.detach().argmax(1)
        mean_loss, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        mean_loss.update(loss.detach(), weight=len(labels))
        metrics.update(preds, labels)
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=stage != "test")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        if stage != "train":
            getattr(self, f"{stage}_per_class").update(preds, labels)
            getattr(self, f"{stage}_confusion").update(preds, labels)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        # The per-step value is for the progress bar and the step curve; the epoch mean comes from the metric.
        self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _log_per_class(self, stage: str) -> None:
        per_class, confusion = getattr(self, f"{stage}_per_class"), getattr(self, f"{stage}_confusion")
        if not self.trainer.sanity_checking:
            # compute() syncs across DDP ranks, so every rank logs the same whole-split values.
            for name, values in per_class.compute().items():
                for class_name, value in zip(self.class_names, values, strict=True):
                    self.log(f"{stage}/{name}/{class_name}", value)
            self.confusion[stage] = confusion.compute().cpu()
        per_class.reset()
        confusion.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_per_class("val")

    def on_test_epoch_end(self) -> None:
        self._log_per_class("test")

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(param_groups(self.net))
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
