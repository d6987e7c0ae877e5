"""A readable record of a run: one line per epoch in the run's log, and an early estimate of the run's length."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl

from sepdense.measure import available_memory_mb, peak_memory_mb, synchronized_clock

log = logging.getLogger("sepdense")


def duration(seconds: float) -> str:
    """'2 h 05 min', '7 min 30 s' or '42 s'."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def memory_line(peak_mb: float, free_mb: float | None) -> str:
    """The run's memory so far on a CPU, and a warning when the machine has little left beside it."""
    line = f" Memory: {peak_mb / 1024:.1f} GB at its peak so far"
    if free_mb is not None and free_mb < 0.25 * peak_mb:
        return line + (f", and this machine has only {free_mb / 1024:.1f} GB free beside it: expect swapping, which "
                       f"slows training many times; lower data.batch_size or the network's size, or close other "
                       f"programs.")  # fmt: skip
    return line + "."


def estimate_line(step_s: float, steps_left: int, epoch: int, max_epochs: int | None) -> str:
    """The estimate of the training left: the rest of the current (0-based) ``epoch`` and the epochs after it."""
    steps = f"{steps_left:,} more step{'' if steps_left == 1 else 's'}"
    if max_epochs is not None and max_epochs > 0:  # -1: the run is bounded by trainer.max_steps instead
        after = max_epochs - epoch - 1
        later = {0: "", 1: f" and epoch {epoch + 2}"}.get(after, f" and epochs {epoch + 2}–{max_epochs}")
        steps += f" (the rest of epoch {epoch + 1}{later} of {max_epochs})"
    return (
        f"Estimated training time: {duration(steps_left * step_s)} for {steps} at {step_s:.3g} s per step, plus "
        "validation. For a shorter run: trainer.max_epochs=<n> and/or trainer.limit_train_batches=<fraction>."
    )


class EpochLog(pl.Callback):
    """Writes to the log (``train.log`` in the run directory, and the console) one line per epoch:
    epoch, training and validation loss and accuracy, training images/s, time elapsed and left.

    After the first ``estimate_after`` timed training steps (past ``warmup_steps`` that include
    start-up costs) it also logs how long the whole run will take, so a run that would take days
    says so in its first minute. Survives output to a file (nohup, SLURM), where a progress bar
    would leave nothing readable.
    """

    def __init__(self, warmup_steps: int = 2, estimate_after: int = 10) -> None:
        self.warmup_steps, self.estimate_after = warmup_steps, estimate_after
        self._fit_start = self._epoch_start = self._timed_from = 0.0
        self._epoch_seconds: list[float] = []
        self._estimated = False
        self._seen = 0

    @staticmethod
    def _now(trainer: pl.Trainer) -> float:
        return synchronized_clock(trainer.strategy.root_device)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._epoch_start = self._fit_start  # a run resumed mid-epoch starts inside an epoch, without its start hook
        self._epoch_seconds = []
        self._estimated = False
        self._seen = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._estimated or not trainer.is_global_zero:
            return
        # Few batches per epoch (smoke runs): time what there is.
        warmup = min(self.warmup_steps, max(0, trainer.num_training_batches - 2))
        timed = min(self.estimate_after, trainer.num_training_batches - warmup - 1)
        self._seen += 1  # batches trained by this process: a resumed run starts inside an epoch
        if self._seen == warmup:
            self._timed_from = self._now(trainer)
        elif self._seen == warmup + timed:
            step_s = (self._now(trainer) - (self._timed_from or self._epoch_start)) / timed
            steps_left = max(0, int(trainer.estimated_stepping_batches) - trainer.global_step)
            line = estimate_line(step_s, steps_left, trainer.current_epoch, trainer.max_epochs)
            device = trainer.strategy.root_device
            if device.type == "cpu":  # a GPU's memory runs out with an error, a CPU's by swapping without one
                line += memory_line(peak_memory_mb(device), available_memory_mb())
            log.info(line)
            self._estimated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        now = time.perf_counter()
        self._epoch_seconds.append(now - self._epoch_start)
        metrics = trainer.callback_metrics

        def value(key: str, scale: float = 1.0, fmt: str = ".4f") -> str:
            return format(float(metrics[key]) * scale, fmt) if key in metrics else "-"

        epochs_left = max(0, (trainer.max_epochs or 0) - trainer.current_epoch - 1)
        left = duration(epochs_left * sum(self._epoch_seconds) / len(self._epoch_seconds))
        log.info(
            "epoch %d/%s  train loss %s acc %s%%  val loss %s acc %s%%  %s images/s  elapsed %s  left ~%s",
            trainer.current_epoch + 1, trainer.max_epochs, value("train/loss"), value("train/acc", 100, ".2f"),
            value("val/loss"), value("val/acc", 100, ".2f"), value("time/train_images_per_s", fmt=",.0f"),
            duration(now - self._fit_start), left,
        )  # fmt: skip
