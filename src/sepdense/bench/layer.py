"""Layer level: one k×k conv, standard vs separable, over a grid of channel counts, sizes and kernels.

Shows the gap between the MACs a separable conv saves (closed form: a fraction
1/C_out + 1/k² of the standard conv's) and the wall-clock time it saves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sepdense.bench.timing import time_ms
from sepdense.callbacks.model_cost import count_macs, count_parameters
from sepdense.models.layers import create_conv2d


def layer_row(conv: str, channels: int, size: int, k: int, batch: int, min_run_time: float, device: str) -> dict:
    layer: nn.Module = create_conv2d(conv, channels, channels, k).to(device)
    x = torch.randn(batch, channels, size, size, device=device)
    with torch.no_grad():
        forward_ms = time_ms(lambda: layer(x), min_run_time)
    x.requires_grad_(True)  # inside a network the input gradient is needed too

    def forward_backward() -> None:
        layer(x).sum().backward()

    return {
        "conv": conv,
        "channels": channels,
        "size": size,
        "k": k,
        "batch": batch,
        "params": count_parameters(layer),
        "macs": count_macs(layer, (1, channels, size, size)),
        "forward_ms": forward_ms,
        "forward_backward_ms": time_ms(forward_backward, min_run_time),
    }


def benchmark_layers(
    channels: Sequence[int], sizes: Sequence[int], kernels: Sequence[int], batch: int, min_run_time: float, device: str
) -> tuple[list[dict], list[dict]]:
    """Rows per (conv, channels, size, k), and one comparison row per grid point with theory and measurement."""
    rows, comparison = [], []
    for k in kernels:
        for size in sizes:
            for c in channels:
                std, sep = (
                    layer_row(conv, c, size, k, batch, min_run_time, device) for conv in ("standard", "separable")
                )
                rows += [std, sep]
                comparison.append(
                    {
                        "channels": c,
                        "size": size,
                        "k": k,
                        "mac_ratio_theory": 1 / c + 1 / k**2,
                        "mac_ratio_measured": sep["macs"] / std["macs"],
                        "param_ratio": sep["params"] / std["params"],
                        "forward_time_ratio": sep["forward_ms"] / std["forward_ms"],
                        "forward_backward_time_ratio": sep["forward_backward_ms"] / std["forward_backward_ms"],
                    }
                )
    return rows, comparison
