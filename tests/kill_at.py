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
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback

PLACES = ("train_batch", "validation", "after_checkpoint", "test")


class KillAt(pl.Callback):
    """Sends ``signal`` to this process at ``place``: after training step ``step`` (train_batch), during the
    validation of the epoch after that step (validation), at the start of the epoch after the step's
    epoch, right after its checkpoint was written (after_checkpoint), or at the first test batch (test).

    ``to``: ``parent`` sends it to the process that started this one instead (a parallel sweep's command, as
    ``kill <pid>`` or ``timeout`` would), ``group`` to this process's whole group (Ctrl-C in a terminal). ``only``:
    an override (``seed=1``) of the one sweep job that sends it; the others never do."""

    def __init__(self, place: str, step: int = 1, signal: str = "SIGKILL", to: str = "self",
                 only: str | None = None) -> None:  # fmt: skip
        assert place in PLACES and to in ("self", "parent", "group"), (place, to)
        self.place, self.step, self.signum, self.to = place, step, getattr(signal_module, signal), to
        self.only, self.sent = only, False

    def _kill(self) -> None:
        if self.sent or (self.only and self.only not in HydraConfig.get().overrides.task):
            return
        self.sent = True
        if self.to == "group":
            os.killpg(os.getpgid(0), self.signum)
        else:
            os.kill(os.getppid() if self.to == "parent" else os.getpid(), self.signum)

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
