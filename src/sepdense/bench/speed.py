"""Speed level: one training step of the configured network as training runs it, in each way it can run.

Modes: ``eager``; ``compiled`` (``torch.compile`` through ``module.compile``; its compile time is
reported apart); ``graphed`` (forward and backward replayed from one CUDA graph; GPU only). Each
step is the training module's own loss with SGD (Nesterov momentum, weight decay) on one fixed
batch, in bf16 autocast on a GPU (as ``trainer.precision=auto`` gives) and fp32 on CPU.

Every measurement runs in a fresh process (``python -m sepdense.bench.speed``), so compile caches,
memory and the allocator setting of one cannot help or hurt another; eager steps are measured
with and without ``reuse_freed_memory`` (a process-wide setting), and the processes of the two
conv types alternate, so a change in machine load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence

import torch

from sepdense.errors import ConfigError
from sepdense.measure import synchronized_clock, time_ms
from sepdense.models import BASELINE_CONV, ordered_conv_types
from sepdense.module import ImageClassifier
from sepdense.optim import param_groups
from sepdense.runtime import GraphedStep, reuse_freed_memory

MODES = ("eager", "compiled", "graphed")
ALLOCATORS = ("reuse", "default")  # reuse_freed_memory on, or glibc's own behaviour


def training_step(module: ImageClassifier, mode: str, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One optimizer step of ``module`` on a fixed batch, run the way ``mode`` says (as training runs it)."""
    fused = {"fused": True} if mode == "graphed" else {}  # the graphed path's optimizer: one kernel per update
    optimizer = torch.optim.SGD(param_groups(module.net), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                **fused)  # fmt: skip
    graphed = GraphedStep(module.loss_and_logits, list(module.net.parameters())) if mode == "graphed" else None
    device_type = images.device.type
    use_bf16 = device_type == "cuda" and torch.cuda.is_bf16_supported()  # decided once, outside the timed step

    def step() -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16):
            if graphed is not None:
                graphed(images, labels)
            else:
                optimizer.zero_grad(set_to_none=True)
                module.loss_and_logits(images, labels)[0].backward()
        optimizer.step()

    return step


def measure_step(model_kwargs: dict, conv: str, mode: str, allocator: str, device: str, batch: int,
                 compile_mode: str, channels_last: bool, min_run_time: float) -> dict:  # fmt: skip
    """Time one training step in this process (see the module docstring)."""
    if allocator == "reuse":
        reuse_freed_memory()
    torch.manual_seed(0)
    module = ImageClassifier(
        net={"_target_": "sepdense.models.DenseNet", **model_kwargs, "conv": conv},
        class_names=[str(i) for i in range(10)],
        label_smoothing=0.1,
        channels_last=channels_last,
        compile=compile_mode if mode == "compiled" else False,
    ).to(device)
    images = torch.randn(batch, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    step = training_step(module, mode, images, labels)
    start = synchronized_clock(images.device)
    step()  # compiles (compiled); the first eager warm-up step (graphed)
    first_s = synchronized_clock(images.device) - start
    for _ in range(3 if mode == "graphed" else 0):  # the rest of the graph's warm-up, and its capture
        step()
    step_ms = time_ms(step, min_run_time)
    row = {"conv": conv, "mode": mode, "allocator": allocator, "batch": batch, "step_ms": step_ms,
           "images_per_s": batch * 1000 / step_ms}  # fmt: skip
    if mode == "compiled":
        row["compile_s"] = first_s
    return row


def benchmark_speed(
    model_kwargs: dict,
    device: str,
    batch: int,
    modes: Sequence[str],
    compile_mode: str,
    channels_last: bool,
    min_run_time: float,
    repeats: int = 1,
) -> tuple[list[dict], list[dict]]:
    """Rows per (conv type, mode, allocator): median step time over ``repeats`` fresh processes, images/s,
    compile time; and the ratios to the baseline conv type and to the eager step."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"speed_level.modes has unknown modes {unknown}; choose from {list(MODES)}.")
    settings = [(mode, allocator) for mode in modes for allocator in ALLOCATORS
                if (mode != "graphed" or device == "cuda") and (allocator == "reuse" or mode == "eager")]  # fmt: skip
    measured: dict[tuple, list[dict]] = {}
    for _ in range(repeats):
        for mode, allocator in settings:
            for conv in ordered_conv_types():  # the conv types alternate, so load changes hit them alike
                args = {"model_kwargs": model_kwargs, "conv": conv, "mode": mode, "allocator": allocator,
                        "device": device, "batch": batch, "compile_mode": compile_mode,
                        "channels_last": channels_last, "min_run_time": min_run_time}  # fmt: skip
                measured.setdefault((conv, mode, allocator), []).append(_in_subprocess(args))
    rows = []
    for runs in measured.values():
        row = dict(runs[0])
        row["step_ms"] = statistics.median(r["step_ms"] for r in runs)
        row["images_per_s"] = batch * 1000 / row["step_ms"]
        row["processes"] = len(runs)
        row["step_ms_range"] = f"{min(r['step_ms'] for r in runs):,.0f}–{max(r['step_ms'] for r in runs):,.0f}"
        rows.append(row)
    return rows, speed_comparison(rows)


def _in_subprocess(args: dict) -> dict:
    command = [sys.executable, "-m", "sepdense.bench.speed", json.dumps(args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"speed measurement {args['conv']}/{args['mode']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def speed_comparison(rows: list[dict]) -> list[dict]:
    """Per setting: each conv type's images/s ÷ the baseline's, and ÷ its own eager step with glibc's default."""
    by_key = {(r["conv"], r["mode"], r["allocator"]): r for r in rows}
    out = []
    for (conv, mode, allocator), row in by_key.items():
        entry: dict = {"conv": conv, "mode": mode, "allocator": allocator}
        base = by_key.get((BASELINE_CONV, mode, allocator))
        if base is not None and conv != BASELINE_CONV:
            entry[f"images_per_s ÷ {BASELINE_CONV}"] = row["images_per_s"] / base["images_per_s"]
        reference = by_key.get((conv, "eager", "default"))
        if reference is not None and reference is not row:
            entry["images_per_s ÷ eager, default allocator"] = row["images_per_s"] / reference["images_per_s"]
        if len(entry) > 3:
            out.append(entry)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Time one training step (used by benchmark.py's speed level).")
    parser.add_argument("args", type=json.loads, help="the keyword arguments of measure_step, as JSON")
    print(json.dumps(measure_step(**parser.parse_args().args)))
