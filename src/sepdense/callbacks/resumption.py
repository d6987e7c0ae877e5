"""What lets a run stop anywhere and continue: a checkpoint on SIGTERM or Ctrl-C, and the metrics a resume needs."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from sepdense.precision import scalars
from sepdense.stopping import time_left, worker_stop_requested

log = logging.getLogger("sepdense")


class Interruption(pl.Callback):
    """Writes ``checkpoint`` (the run's last.ckpt) of the step at which the signal arrived.

    Lightning turns SIGTERM into an exception at the next batch boundary (seconds, not the rest of
    an epoch that can take an hour on a CPU) and Ctrl-C into KeyboardInterrupt; either way this
    hook runs before the trainer stops. The checkpoint holds the loop position, the data order's
    place in the epoch, the augmentation RNG and the epoch's metric sums, so ``resume=true``
    continues exactly where the run stopped. ``signal`` says what stopped the run (None: nothing).
    """

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = Path(checkpoint)
        self.signal: str | None = None
        self.saved: Path | None = None

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # A worker of a parallel sweep signalled while its job was starting, before Lightning watched for SIGTERM:
        # stopped through Lightning's own handling, at the end of the first batch with the loop's counters up to date
        # (a stop raised here would save the fetched batch as not yet trained, and skip it on resume).
        if worker_stop_requested() and not trainer.received_sigterm:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signal = "SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            self.signal = "SIGINT (Ctrl-C)"
        else:
            return
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return  # testing is redone in full on resume; nothing of it is worth saving
        trainer.save_checkpoint(self.checkpoint, weights_only=False)  # safe: a save of the whole training state
        self.saved = self.checkpoint
        log.info("%s: saved epoch %d, step %d to %s", self.signal, trainer.current_epoch + 1, trainer.global_step,
                 self.checkpoint)  # fmt: skip


class LastMetrics(pl.Callback):
    """Keeps the latest epoch's train and validation metrics in each checkpoint.

    A run killed after its last epoch (while testing, or writing its report) has nothing left to
    fit when it resumes, so the trainer has no metrics of its own; ``metrics`` then holds the ones
    the checkpoint saved, and the run's metrics.json is the uninterrupted run's.
    """

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is None:
            return {"metrics": self.metrics}
        latest = scalars(self._trainer.callback_metrics)
        return {"metrics": {k: v for k, v in latest.items() if not k.startswith("test/")}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.metrics = dict(state_dict.get("metrics", {}))


class TimeLimit(pl.Callback):
    """Stops training once the command's ``time_limit`` (DD:HH:MM:SS, counted from the command's start) is reached.

    It stops the way SIGTERM does, so ``Interruption`` saves the step it stopped at and the run
    continues exactly from there with ``resume=true``. Checked after every training and
    validation batch: a batch of the default model takes seconds, so the limit is kept to about one batch.
    """

    def __init__(self, limit: str | None = None) -> None:
        self.limit = limit
        self.reached = False
        time_left(limit)  # a malformed limit is reported before training starts

    def _check(self, trainer: pl.Trainer) -> None:
        left = time_left(self.limit)
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if left is not None and left <= 0 and not self.reached and fitting:
            self.reached = True
            # Through Lightning's own SIGTERM handling: it stops at the next batch boundary with the loop's
            # counters up to date (a stop raised from this hook would save a step as not yet done).
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._check(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._check(trainer)
