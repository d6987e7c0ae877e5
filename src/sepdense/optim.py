"""Learning-rate schedules and parameter groups; schedules take ``total_steps`` so configs can swap them."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.02, final_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up from ~0 over ``warmup_fraction`` of training, then cosine decay to ``final_lr_ratio``·lr."""
    warmup = max(1, round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def param_groups(model: nn.Module) -> list[dict]:
    """Weights of convs and linears get weight decay; norm parameters and biases (1-D tensors) do not."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
