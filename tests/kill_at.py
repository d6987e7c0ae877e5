"""Test-only callbacks: the training process signals itself at a chosen place, so a test cuts a run exactly there.

Added on the command line (``+callbacks.kill._target_=kill_at.KillAt``, with ``tests/`` on PYTHONPATH),
never by the project's own configs.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytorch_lightning as pl
from hydra.experimental.callback import Callback as HydraCallback

PLACES = ("train_batch", "validation", "after_checkpoint", "test")


class KillAt(pl.Callback):
    """Sends ``signal`` to this process at ``place``: after training step ``step`` (train_batch), during the
    validation of the epoch after that step (validation), at the start of the epoch after the step's
    epoch, right after its checkpoint was written (after_checkpoint), or at the first test batch (test)."""

    def __init__(self, place: str, step: int = 1, signal: str = "SIGKILL") -> None:
        assert place in PLACES, place
        self.place, self.step, self.signum = place, step, getattr(signal_module, signal)

    def _kill(self) -> None:
        os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.place == "train_batch" and trainer.global_step == self.step:
            self._kill()

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.place == "validation" and not trainer.sanity_checking and trainer.global_step >= self.step:
            self._kill()

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.place == "after_checkpoint" and trainer.global_step >= self.step:
            self._kill()

    def on_test_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.place == "test":
            self._kill()


class KillInReport(HydraCallback):
    """A Hydra callback listed before the report's: the run has ended and its report is not yet complete."""

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class KillAtJobEnd(HydraCallback):
    """In a sweep: SIGKILL when the first job has ended (its metrics are saved, its report is being written)."""

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class DeadlineSoon(HydraCallback):
    """Moves the command's start back so that its ``time_limit`` is reached ``seconds`` into the first job.

    How long start-up takes on a loaded machine is unknown, so a test cannot choose a limit that
    falls inside a job; this makes it fall there.
    """

    def __init__(self, seconds: float = 0.5, per_seed: float = 0.0) -> None:
        self.seconds, self.per_seed, self.moved = seconds, per_seed, False

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        from sepdense import stopping

        if not self.moved:  # each process of a parallel sweep moves its own clock: ``per_seed`` later per seed
            limit = stopping.time_limit_seconds(config.time_limit)
            stopping.INVOCATION_START = time.monotonic() - limit + self.seconds + self.per_seed * (config.seed or 0)
            self.moved = True


signal_module = signal
