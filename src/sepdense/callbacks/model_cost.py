"""Parameters and forward MACs of the network, measured once at the start of a run."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sepdense.bench.timing import time_ms


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass for one input of ``input_shape`` (batch 1).

    Counted by ``torch.utils.flop_counter`` over convolutions and matrix products (2 FLOPs per
    MAC); norms, activations and pooling are not counted, as is usual for MAC figures.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@torch.no_grad()
def latency_ms(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32), min_run_time: float = 0.5) -> float:
    """Median forward time of one input in eval mode (torch.utils.benchmark: warm-up and CUDA sync)."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(input_shape, device=next(model.parameters()).device)
        return time_ms(lambda: model(x), min_run_time)
    finally:
        model.train(was_training)


class ModelCost(pl.Callback):
    """Logs ``model/params``, ``model/macs`` and ``model/latency_b1_ms`` (forward of one image in eval mode)
    at fit (or test) start, and keeps them in ``self.summary``."""

    def __init__(self, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> None:
        self.input_shape = tuple(input_shape)
        self.summary: dict[str, float] = {}

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.summary:
            return
        net = getattr(pl_module, "net", pl_module)
        self.summary = {
            "model/params": count_parameters(net),
            "model/macs": count_macs(net, self.input_shape),
            "model/latency_b1_ms": latency_ms(net, self.input_shape),
        }
        if trainer.logger is not None:
            trainer.logger.log_metrics(self.summary, step=0)
        if trainer.is_global_zero:
            print(
                f"[sepdense] {type(net).__name__} ({getattr(net, 'conv_type', '?')} convs): "
                f"{self.summary['model/params']:,} parameters, {self.summary['model/macs'] / 1e6:.1f}M MACs per image, "
                f"{self.summary['model/latency_b1_ms']:.1f} ms for one image"
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measure(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measure(trainer, pl_module)
