"""Wall time, throughput and peak memory of training, logged per epoch and kept for the final metrics."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from sepdense.callbacks.base import SummaryCallback
from sepdense.measure import peak_memory_mb, reset_peak_memory, synchronized_clock


class Timing(SummaryCallback):
    """Logs ``time/train_epoch_s``, ``time/val_epoch_s``, ``time/train_images_per_s``, ``time/step_ms`` and
    ``memory/peak_mb`` every epoch; ``time/fit_s`` at the end goes only into its ``summary()``, with the last
    epoch's values.

    ``time/fit_s`` and ``memory/peak_mb`` count every process of a resumed run: the time trained before, and the
    peak so far, are kept in the checkpoints (``state_dict``). ``memory/peak_mb`` is defined by
    ``sepdense.measure.PEAK_MEMORY_METHOD``: each run's (and each sweep job's) own, from the start of its fitting;
    a resume on another kind of device starts its peak anew, since the two are different measures.

    Train time runs from the epoch start to the start of that epoch's validation (Lightning
    validates inside the training epoch), so it excludes validation. On GPU the clock reads
    synchronise the device, so queued kernels are counted in the epoch they belong to.
    """

    def __init__(self) -> None:
        super().__init__()
        self._epoch_start = self._val_start = self._fit_start = 0.0
        self._train_s: float | None = None
        self._images = self._steps = 0
        self._fit_s_before = 0.0  # fitting time of the processes before a resume
        # (device type, peak MB) of the processes before a resume
        self._peak_before: tuple[str | None, float] | None = None
        self._trainer: pl.Trainer | None = None

    @staticmethod
    def _now(trainer: pl.Trainer) -> float:
        return synchronized_clock(trainer.strategy.root_device)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        reset_peak_memory(trainer.strategy.root_device)
        self._fit_start = self._epoch_start = self._now(trainer)  # resumed mid-epoch: no epoch start hook runs
        self._trainer = trainer  # a checkpoint's state_dict() reads the clock through it

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._images = self._steps = 0
        self._train_s = None
        self._epoch_start = self._now(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])
        self._steps += 1

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = self._now(trainer)
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._train_s is None:
            self._train_s = now - self._epoch_start
        self._val_start = now

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._log(pl_module, {"time/val_epoch_s": self._now(trainer) - self._val_start})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train_s = self._train_s if self._train_s is not None else self._now(trainer) - self._epoch_start
        values = {"time/train_epoch_s": train_s, "memory/peak_mb": self._peak_mb(trainer)}
        if self._steps:
            # Every rank trains its own shard at the same time, so throughput scales with world size.
            values["time/train_images_per_s"] = self._images * trainer.world_size / train_s
            values["time/step_ms"] = 1000 * train_s / self._steps
        self._log(pl_module, values)

    def _fit_s(self, trainer: pl.Trainer) -> float:
        return self._fit_s_before + self._now(trainer) - self._fit_start

    def _peak_mb(self, trainer: pl.Trainer) -> float:
        device = trainer.strategy.root_device
        now = peak_memory_mb(device)
        before = self._peak_before
        return max(now, before[1]) if before is not None and before[0] in (device.type, None) else now

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is None:
            return {}
        # The last epoch's figures too: a resume with no epoch left to train reports them.
        return {"fit_s": self._fit_s(self._trainer), "final": dict(self.final),
                "peak_mb": [self._trainer.strategy.root_device.type, self._peak_mb(self._trainer)]}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fit_s_before = float(state_dict.get("fit_s", 0.0))
        self.final.update(state_dict.get("final", {}))
        peak = state_dict.get("peak_mb")
        if isinstance(peak, list) and len(peak) == 2:
            self._peak_before = (str(peak[0]), float(peak[1]))
        elif "memory/peak_mb" in self.final:  # saved before the peak was kept: its last epoch's, on the same device
            self._peak_before = (None, float(self.final["memory/peak_mb"]))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # One number per run: it goes to metrics.json and the HPARAMS tab, not to a one-point curve.
        self.final["time/fit_s"] = self._fit_s(trainer)

    def _log(self, pl_module: pl.LightningModule, values: dict[str, float]) -> None:
        self.final.update(values)
        for name, value in values.items():
            pl_module.log(name, float(value), on_step=False, on_epoch=True)
