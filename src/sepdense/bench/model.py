"""Model level: the configured network with each conv type, timed for inference and training, with memory.

Each setting is (precision, memory layout[, torch.compile]); on CPU fp32 in NCHW and
channels_last, on GPU also bf16 autocast. A BN-folded inference row follows each conv type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from sepdense.bench.memory import measure_in_subprocess
from sepdense.bench.timing import time_ms
from sepdense.callbacks.model_cost import count_macs, count_parameters
from sepdense.models import DenseNet
from sepdense.models.fusion import fold_batchnorms


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


def prepare(net: nn.Module, x: torch.Tensor, setting: dict) -> tuple[nn.Module, torch.Tensor]:
    if setting["channels_last"]:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if setting["compile"]:
        net = torch.compile(net)
    return net, x


def inference_timings(net: nn.Module, setting: dict, device: str, batch: int, min_run_time: float) -> dict:
    net = net.eval()
    with torch.no_grad(), autocast(device, setting["precision"]):
        one, x1 = prepare(net, torch.randn(1, 3, 32, 32, device=device), setting)
        latency = time_ms(lambda: one(x1), min_run_time)
        many, xb = prepare(net, torch.randn(batch, 3, 32, 32, device=device), setting)
        batch_ms = time_ms(lambda: many(xb), min_run_time)
    return {"latency_b1_ms": latency, "inference_images_per_s": batch * 1000 / batch_ms}


def train_timings(net: nn.Module, setting: dict, device: str, batch: int, min_run_time: float) -> dict:
    net = net.train()
    net, x = prepare(net, torch.randn(batch, 3, 32, 32, device=device), setting)
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
    step_ms = time_ms(step, min_run_time)
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
    rows = []
    for conv in ("standard", "separable"):
        kwargs = {**model_kwargs, "conv": conv}
        net = DenseNet(**kwargs).to(device)
        cost = {"params": count_parameters(net), "macs": count_macs(net)}
        for setting in settings(device, with_compile):
            row = {"conv": conv, **setting, **cost}
            row.update(inference_timings(net, setting, device, inference_batch, min_run_time))
            row.update(train_timings(DenseNet(**kwargs).to(device), setting, device, train_batch, min_run_time))
            if device == "cpu" and with_memory and not setting["compile"]:
                row["train_peak_memory_mb"] = measure_in_subprocess(kwargs, train_batch, setting["channels_last"])[
                    "step_peak_mb"
                ]
            rows.append(row)
        folded = fold_batchnorms(net)
        setting = {"precision": "fp32", "channels_last": False, "compile": False}
        rows.append(
            {
                "conv": conv,
                **setting,
                "bn_folded": True,
                "params": count_parameters(folded),
                "macs": count_macs(folded),
                **inference_timings(folded, setting, device, inference_batch, min_run_time),
            }
        )
    return rows, model_comparison(rows)


def model_comparison(rows: list[dict]) -> list[dict]:
    """Separable ÷ standard for each setting, and how much of the MAC saving became training time saved.

    ``share_of_mac_saving_realised`` is (1 - time ratio) / (1 - MAC ratio): 1 when time falls in
    proportion to MACs, 0 when it does not fall at all, negative when separable is slower.
    """

    def key(row: dict) -> tuple:
        return row["precision"], row["channels_last"], row["compile"], bool(row.get("bn_folded"))

    standard = {key(r): r for r in rows if r["conv"] == "standard"}
    comparison = []
    for sep in (r for r in rows if r["conv"] == "separable"):
        std = standard.get(key(sep))
        if std is None:
            continue
        precision, channels_last, compiled, folded = key(sep)
        row = {
            "precision": precision,
            "channels_last": channels_last,
            "compile": compiled,
            "bn_folded": folded,
            "param_ratio": sep["params"] / std["params"],
            "mac_ratio": sep["macs"] / std["macs"],
            "latency_b1_ratio": sep["latency_b1_ms"] / std["latency_b1_ms"],
            "inference_images_per_s_ratio": sep["inference_images_per_s"] / std["inference_images_per_s"],
        }
        if "train_step_ms" in sep:
            row["train_images_per_s_ratio"] = sep["train_images_per_s"] / std["train_images_per_s"]
            row["share_of_mac_saving_realised"] = (1 - sep["train_step_ms"] / std["train_step_ms"]) / (
                1 - row["mac_ratio"]
            )
        comparison.append(row)
    return comparison
