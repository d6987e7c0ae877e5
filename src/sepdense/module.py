"""The LightningModule: cross-entropy training of any image classifier, with metrics per stage."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from sepdense.errors import ConfigError, UserError
from sepdense.metrics import NEVER, ClassificationStats
from sepdense.optim import param_groups
from sepdense.runtime import GraphedStep, check_compile_with_cuda_graph, prepare_network, to_layout

log = logging.getLogger(__name__)
STAGES = ("train", "val", "test")
SUMMARY = ("loss", "acc", "precision", "recall", "f1")


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite."""


class ImageClassifier(pl.LightningModule):
    """Wraps a network with a (label-smoothed) cross-entropy loss, the optimizer, the LR schedule and the metrics.

    Training minimises the label-smoothed loss; validation and test report plain cross-entropy, the
    loss that compares across recipes (and the one ``EarlyStopping`` on ``val/loss`` watches).
    Logged per stage (``train/``, ``val/``, ``test/``) once per epoch: loss, acc, macro precision /
    recall / f1; for val and test also per-class precision / recall / f1 (``val/f1/cat``), and the
    confusion matrix is kept in ``self.confusion``. Nothing is read back from the device during
    an epoch except at the logging interval (``trainer.log_every_n_steps``), where a non-finite
    loss stops training before a checkpoint can store it (on every rank at once under DDP).

    ``net`` is a network, or its config (a ``_target_`` mapping, as in ``conf/model``); given as a
    config it is saved in checkpoints, so ``ImageClassifier.load_from_checkpoint(path)`` rebuilds
    the whole model. ``cuda_graph`` replays forward and backward of each training step from one
    CUDA graph (see ``runtime.GraphedStep``).
    """

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any],
        class_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: str | bool | None = False,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__()
        ignore = ["optimizer", "scheduler", *(["net"] if isinstance(net, nn.Module) else [])]
        self.save_hyperparameters(logger=False, ignore=ignore)
        check_compile_with_cuda_graph(compile, cuda_graph)  # the compiled network then runs inside our graph
        if not isinstance(net, nn.Module):
            net = hydra.utils.instantiate(dict(net))
        self.net = prepare_network(net, channels_last, compile)
        self.channels_last = channels_last
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.class_names = list(class_names)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss()
        for stage in STAGES:
            # One metric object per stage, so each stage resets and reduces its own
            # (nn.Module cannot hold an attribute named 'train': that name is nn.Module.train).
            setattr(self, f"{stage}_stats", ClassificationStats(len(self.class_names)))
        self.confusion: dict[str, Tensor] = {}
        self.predictions: dict[str, Any] = {}
        self._test_outputs: list[tuple[Tensor, Tensor, Tensor]] = []
        self.cuda_graph = cuda_graph
        self.automatic_optimization = not cuda_graph  # the graphed step runs the optimizer itself
        self._graphed_step: GraphedStep | None = None
        self._last_loss = torch.zeros(())

    def forward(self, images: Tensor) -> Tensor:
        return self.net(to_layout(images, self.channels_last))

    def loss_and_logits(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        logits = self(images)
        return self.criterion(logits, labels), logits

    # Training

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor | None:
        images, labels = batch[0], batch[1]
        if self.cuda_graph:
            loss, logits = self._graph_step(images, labels)
        else:
            loss, logits = self.loss_and_logits(images, labels)
        self.train_stats.update(logits.detach(), labels, loss.detach(), self.global_step)
        self._last_loss = loss.detach()
        return None if self.cuda_graph else loss

    def _graph_step(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if self._graphed_step is None:
            if self.trainer.world_size > 1:
                raise ConfigError("module.cuda_graph=true runs on one device; use it without trainer=ddp.")
            if str(self.trainer.precision).startswith("16"):
                # fp16 needs a gradient scaler around the backward, which the captured graph does not have.
                raise ConfigError(
                    f"module.cuda_graph=true does not support trainer.precision={self.trainer.precision}; "
                    f"use bf16-mixed (the default on GPUs) or 32-true."
                )
            self._graphed_step = GraphedStep(self.loss_and_logits, list(self.net.parameters()))
        loss, logits = self._graphed_step(images, labels)
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        optimizer.step()  # through Lightning, which counts the step (global_step, checkpoints, logging)
        if scheduler is not None:
            scheduler.step()
        return loss, logits

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """At the logging interval and on the epoch's last batch: the only reads from the device in an epoch.

        Runs after the optimizer step, so ``global_step`` counts this batch: a non-finite loss stops
        training here, before validation and before a checkpoint could store its weights.
        """
        last = batch_idx + 1 >= self.trainer.num_training_batches
        at_interval = self.global_step % self.trainer.log_every_n_steps == 0
        if last or at_interval:
            self._raise_if_not_finite("train")
        if at_interval:
            # Lightning sends step metrics to the loggers at this same interval, so one call logs it everywhere.
            self.log("train/loss_step", self._last_loss.item(), on_step=True, on_epoch=False, prog_bar=True,
                     batch_size=1)  # fmt: skip
        if last:
            # Logged on the last batch rather than at epoch end, so that callbacks' epoch-end hooks see them.
            self._log_stats("train")

    # Evaluation

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        logits = self._eval_step(batch, "test")
        index, labels = batch[2], batch[1]  # index: the image's position in the test split as the source stores it
        self._test_outputs.append((index, labels, logits.float()))

    def _eval_step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        images, labels = batch[0], batch[1]
        logits = self(images)
        loss = self.eval_criterion(logits, labels)
        getattr(self, f"{stage}_stats").update(logits, labels, loss, self.global_step)
        return logits

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_stats.reset()
            return
        self._raise_if_not_finite("val")
        self._log_stats("val")

    def on_test_epoch_start(self) -> None:
        self._test_outputs = []

    def on_test_epoch_end(self) -> None:
        self._raise_if_not_finite("test")
        self._log_stats("test")
        parts = [torch.cat(p).cpu() for p in zip(*self._test_outputs, strict=True)]
        if self.trainer.world_size > 1:  # every rank tested its own shard: gather them all
            gathered: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, parts)
            parts = [torch.cat(p) for p in zip(*gathered, strict=True)]
        order = parts[0].argsort()
        self.predictions = {name: p[order] for name, p in zip(("index", "label", "logits"), parts, strict=True)}
        # Which data these predictions are of (source and test-split fingerprint), saved beside them.
        self.predictions |= getattr(self.trainer.datamodule, "test_data", {})
        self._test_outputs = []

    # Metrics

    def _raise_if_not_finite(self, stage: str) -> None:
        """Stop on a non-finite loss seen on any rank: all ranks agree first, so none waits for one that stopped."""
        step = getattr(self, f"{stage}_stats").nonfinite_step.clone()
        if self.trainer.world_size > 1:
            torch.distributed.all_reduce(step, op=torch.distributed.ReduceOp.MIN)
        step = int(step)
        if step == NEVER:
            return
        precision = str(self.trainer.precision)
        advice = "Lower the learning rate (optimizer.lr)" + (
            "" if precision.startswith("32") else " or train in full precision (trainer.precision=32-true)"
        )
        raise NonFiniteLossError(
            f"The {stage} loss became NaN or infinite at epoch {self.current_epoch}, step {step}. "
            f"{advice}; checkpoints already saved are kept."
        )

    def _log_stats(self, stage: str) -> None:
        stats_metric: ClassificationStats = getattr(self, f"{stage}_stats")
        stats = {k: v.cpu() for k, v in stats_metric.compute().items()}  # one read per epoch
        values = {f"{stage}/{k}": float(stats[k]) for k in SUMMARY}
        if stage != "train":
            for name in ("precision", "recall", "f1"):
                for class_name, value in zip(self.class_names, stats[f"{name}_per_class"].tolist(), strict=True):
                    if value == value:  # NaN: the class has no image in this subset, so it is left out
                        values[f"{stage}/{name}/{class_name}"] = value
            self.confusion[stage] = stats["confusion"]
        prog_bar = {f"{stage}/loss", f"{stage}/acc"} if stage != "test" else set()
        for name, value in values.items():
            self.log(name, value, on_step=False, on_epoch=True, prog_bar=name in prog_bar, batch_size=1)
        stats_metric.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A checkpoint saved mid-epoch (on a signal) keeps the epoch's training sums so far, so the epoch's
        # train metrics after a resume count every batch once, as in an uninterrupted run.
        checkpoint["train_stats"] = {name: v.detach().cpu() for name, v in self.train_stats.metric_state.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for name, value in checkpoint.get("train_stats", {}).items():
            setattr(self.train_stats, name, value.to(getattr(self.train_stats, name).device))

    def configure_optimizers(self) -> dict:
        if self.optimizer_factory is None:
            raise ConfigError("This model was built without an optimizer (e.g. loaded to evaluate); it cannot train.")
        extra = {"fused": True} if self.cuda_graph else {}  # fused: one kernel for the whole update
        optimizer = self.optimizer_factory(param_groups(self.net), **extra)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        # Named so that LearningRateMonitor's curves (train/lr/pg1: weights, pg2: norms and biases) sit
        # with the other training curves in TensorBoard.
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"},
        }
