"""Layer level: one k×k conv of each registered type over a grid of channel counts, sizes and kernels.

Shows the gap between the MACs a conv type saves against the baseline (for the separable pair,
in closed form a fraction 1/C_out + 1/k² of the standard conv's) and the wall-clock time it saves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sepdense.measure import count_macs, count_parameters, time_ms
from sepdense.models import BASELINE_CONV, create_conv2d, ordered_conv_types


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
    """Rows per (conv, channels, size, k), and per grid point one comparison row of each type with the baseline."""
    rows, comparison = [], []
    for k in kernels:
        for size in sizes:
            for c in channels:
                measured = {
                    conv: layer_row(conv, c, size, k, batch, min_run_time, device) for conv in ordered_conv_types()
                }
                rows += measured.values()
                base = measured[BASELINE_CONV]
                for conv, row in measured.items():
                    if conv == BASELINE_CONV:
                        continue
                    comparison.append(
                        {
                            "conv": f"{conv} ÷ {BASELINE_CONV}",
                            "channels": c,
                            "size": size,
                            "k": k,
                            # The closed form holds for the separable pair (depth-wise k×k + point-wise 1×1).
                            **({"mac_ratio_theory": 1 / c + 1 / k**2} if conv == "separable" else {}),
                            "mac_ratio_measured": row["macs"] / base["macs"],
                            "param_ratio": row["params"] / base["params"],
                            "forward_time_ratio": row["forward_ms"] / base["forward_ms"],
                            "forward_backward_time_ratio": row["forward_backward_ms"] / base["forward_backward_ms"],
                        }
                    )
    return rows, comparison
