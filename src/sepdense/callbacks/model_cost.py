"""Parameters, forward MACs and batch-1 latency of the network, measured once at the start of a run."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from sepdense.callbacks.base import SummaryCallback
from sepdense.measure import LATENCY_METHOD, count_macs, count_parameters, latency_ms

log = logging.getLogger("sepdense")


class ModelCost(SummaryCallback):
    """Measures ``model/params``, ``model/macs`` and ``model/latency_b1_ms`` at fit (or test) start.

    Constants of the run: they go into its ``summary()`` (metrics.json, the HPARAMS tab), not onto
    one-point curves. Latency is measured as ``sepdense.measure.LATENCY_METHOD`` says.
    """

    def __init__(self, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.final:
            return
        net = getattr(pl_module, "net", pl_module)
        self.final = {
            "model/params": count_parameters(net),
            "model/macs": count_macs(net, self.input_shape),
            "model/latency_b1_ms": latency_ms(net, self.input_shape),
        }
        if trainer.is_global_zero:
            log.info(
                f"{type(net).__name__} ({getattr(net, 'conv_type', '?')} convs): "
                f"{self.final['model/params']:,} parameters, {self.final['model/macs'] / 1e6:.1f}M MACs per image, "
                f"{self.final['model/latency_b1_ms']:.1f} ms for one image ({LATENCY_METHOD})"
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measure(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measure(trainer, pl_module)
