"""Model level: the configured network with each conv type, timed for inference and training, with memory.

Each setting is (precision, memory layout[, torch.compile]); on CPU fp32 in NCHW and
channels_last, on GPU also bf16 autocast, then a BN-folded inference row. Within each setting the
conv types are timed one after the other (as the layer, speed and deploy levels do), so that a change
of load on the machine moves both sides of a ratio alike instead of one conv type's every setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from sepdense.bench.memory import measure_in_subprocess
from sepdense.measure import count_macs, count_parameters, latency_ms, time_ms
from sepdense.models import BASELINE_CONV, DenseNet, ordered_conv_types
from sepdense.models.fusion import fold_batchnorms
from sepdense.runtime import prepare_network, to_layout


def settings(device: str, with_compile: bool) -> Iterator[dict]:
    precisions = ["fp32", "bf16"] if device == "cuda" else ["fp32"]
    for precision in precisions:
        for channels_last in (False, True):
            yield {"precision": precision, "channels_last": channels_last, "compile": False}
    if with_compile:
        yield {"precision": precisions[-1], "channels_last": device == "cuda", "compile": True}


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference_timings(net: nn.Module, setting: dict, device: str, batch: int, min_run_time: float) -> dict:
    net = prepare_network(net.eval(), setting["channels_last"], setting["compile"])
    with autocast(device, setting["precision"]):
        latency = latency_ms(net, (1, 3, 32, 32), min_run_time)
        with torch.no_grad():
            x = to_layout(torch.randn(batch, 3, 32, 32, device=device), setting["channels_last"])
            batch_ms = time_ms(lambda: net(x), min_run_time)
    return {"latency_b1_ms": latency, "inference_images_per_s": batch * 1000 / batch_ms}


def train_timings(
    net: nn.Module, setting: dict, device: str, batch: int, min_run_time: float = 1.0, runs: int | None = None
) -> dict:
    """One SGD training step (forward, backward, update) on random CIFAR-sized inputs: ms, images/s, CUDA memory.

    Timed for ``min_run_time`` seconds, or over exactly ``runs`` steps (see ``measure.time_ms``).
    """
    net = prepare_network(net.train(), setting["channels_last"], setting["compile"])
    x = to_layout(torch.randn(batch, 3, 32, 32, device=device), setting["channels_last"])
    labels = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, setting["precision"]):
            loss = nn.functional.cross_entropy(net(x), labels)
        loss.backward()
        optimizer.step()

    if device == "cuda":
        step()
        torch.cuda.reset_peak_memory_stats()
    step_ms = time_ms(step, min_run_time, runs=runs)
    row = {"train_step_ms": step_ms, "train_images_per_s": batch * 1000 / step_ms}
    if device == "cuda":
        row["train_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def benchmark_model(
    model_kwargs: dict,
    device: str,
    train_batch: int,
    inference_batch: int,
    min_run_time: float,
    with_compile: bool,
    with_memory: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Rows for every registered conv type and setting (grouped by conv type), and each type's ratios to the
    baseline; measured setting by setting, the conv types side by side within each."""
    convs = ordered_conv_types()
    kwargs = {conv: {**model_kwargs, "conv": conv} for conv in convs}
    nets = {conv: DenseNet(**kwargs[conv]).to(device) for conv in convs}
    cost = {conv: {"params": count_parameters(net), "macs": count_macs(net)} for conv, net in nets.items()}
    rows: dict[str, list[dict]] = {conv: [] for conv in convs}
    for setting in settings(device, with_compile):
        for conv in convs:
            row = {"conv": conv, **setting, **cost[conv]}
            net = DenseNet(**kwargs[conv]).to(device)
            row.update(inference_timings(net, setting, device, inference_batch, min_run_time))
            row.update(train_timings(DenseNet(**kwargs[conv]).to(device), setting, device, train_batch, min_run_time))
            if device == "cpu" and with_memory and not setting["compile"]:
                measured = measure_in_subprocess(kwargs[conv], train_batch, setting["channels_last"])
                row["train_peak_memory_mb"] = measured["step_peak_mb"]
            rows[conv].append(row)
    setting = {"precision": "fp32", "channels_last": False, "compile": False}
    for conv in convs:
        folded = fold_batchnorms(nets[conv])
        rows[conv].append({"conv": conv, **setting, "bn_folded": True, "params": count_parameters(folded),
                           "macs": count_macs(folded),
                           **inference_timings(folded, setting, device, inference_batch, min_run_time)})  # fmt: skip
    flat = [row for conv in convs for row in rows[conv]]
    return flat, model_comparison(flat)


def model_comparison(rows: list[dict]) -> list[dict]:
    """Each conv type ÷ the baseline for each setting, and how much of the MAC saving became training time saved.

    ``share_of_mac_saving_realised`` is (1 − time ratio) / (1 − MAC ratio): 1 when time falls in
    proportion to MACs, 0 when it does not fall at all, negative when the type is slower.
    """

    def key(row: dict) -> tuple:
        return row["precision"], row["channels_last"], row["compile"], bool(row.get("bn_folded"))

    baseline = {key(r): r for r in rows if r["conv"] == BASELINE_CONV}
    comparison = []
    for other in (r for r in rows if r["conv"] != BASELINE_CONV):
        base = baseline.get(key(other))
        if base is None:
            continue
        precision, channels_last, compiled, folded = key(other)
        row = {
            "conv": f"{other['conv']} ÷ {BASELINE_CONV}",
            "precision": precision,
            "channels_last": channels_last,
            "compile": compiled,
            "bn_folded": folded,
            "param_ratio": other["params"] / base["params"],
            "mac_ratio": other["macs"] / base["macs"],
            "latency_b1_ratio": other["latency_b1_ms"] / base["latency_b1_ms"],
            "inference_images_per_s_ratio": other["inference_images_per_s"] / base["inference_images_per_s"],
        }
        if "train_step_ms" in other:
            row["train_images_per_s_ratio"] = other["train_images_per_s"] / base["train_images_per_s"]
            if row["mac_ratio"] != 1:
                row["share_of_mac_saving_realised"] = (1 - other["train_step_ms"] / base["train_step_ms"]) / (
                    1 - row["mac_ratio"]
                )
        comparison.append(row)
    return comparison
