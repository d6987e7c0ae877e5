"""Speed level: every way to run the training step on this machine, timed, checked against eager, and projected
to the time of the default training run, ending with the training command of the fastest.

Modes: ``eager``; ``compiled`` (``module.compile``, once per mode of ``compile_modes``); ``graphed``
(``module.cuda_graph``: forward and backward replayed from one CUDA graph); ``compiled+graphed`` (the
compiled network inside that graph). Each step is the training module's own loss with SGD (Nesterov
momentum, weight decay; fused where the graphed step uses it) on one fixed batch, in the precision
``trainer.precision=auto`` gives on this device (bf16 autocast on a GPU or a CPU with bf16 instructions,
fp32 elsewhere); ``precisions`` adds eager rows in other precisions (e.g. 32-true).

On a CPU, ``jobs`` adds eager rows of several one-job-per-process runs at once (as
``hydra/launcher=local_parallel`` runs a sweep), each with cores ÷ jobs threads: they start their timed
steps together and keep stepping until all have finished, so each is timed under the others' load. Every
row also gives the share of the machine's peak bf16 matrix-multiply rate that its training step reaches.

Every measurement runs in a fresh process (``python -m sepdense.bench.speed``) with Inductor's disk
caches off, so compile caches, memory and the allocator setting of one cannot help or hurt another;
the processes of the conv types alternate, so a change in machine load hits them alike. On a CPU the
eager step is also measured with glibc's default allocator (``reuse_freed_memory=false``, a
process-wide setting).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sepdense.errors import ConfigError
from sepdense.measure import count_macs, synchronized_clock, time_ms
from sepdense.models import BASELINE_CONV, DenseNet, ordered_conv_types
from sepdense.module import ImageClassifier
from sepdense.optim import param_groups
from sepdense.precision import resolve_precision
from sepdense.runtime import (
    CUDA_GRAPH_COMPILE_MODES,
    GraphedStep,
    check_compile_mode,
    check_compile_with_cuda_graph,
    reuse_freed_memory,
)

MODES = ("eager", "compiled", "graphed", "compiled+graphed")
# Steps from the same initial weights on the same batch whose losses every mode records and the parent
# compares with eager's: enough for GraphedStep's 3 warm-up steps, its capture and two replays.
CHECK_STEPS = 6
# A training step costs about three forward passes (the backward computes gradients of inputs and of weights),
# and a multiply-accumulate is two floating-point operations.
TRAIN_FLOPS_PER_MAC = 6
# Seconds concurrent jobs wait for each other at the start of their timing before giving up.
BARRIER_TIMEOUT_S = 600


def settings(modes: Sequence[str], compile_modes: Sequence[str], device: str, batches: Sequence[int],
             precisions: Sequence[str] = ("auto",), jobs: Sequence[int] = (1,)
             ) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """What to measure: one setting per (batch, mode, compile mode, allocator), in the precision training uses
    (``auto``); eager also in each other of ``precisions`` and, on a CPU at the training batch, as each number
    of ``jobs`` at once. Returns the settings and what is left out, with why."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"speed_level.modes has unknown modes {unknown}; choose from {list(MODES)}.")
    for mode in compile_modes:
        try:
            check_compile_mode(mode)
        except ConfigError as error:
            raise ConfigError(f"speed_level.compile_modes: {error}") from None
    if any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in batches):
        raise ConfigError(f"speed_level.batches={list(batches)} must be positive whole numbers.")
    if any(not isinstance(j, int) or isinstance(j, bool) or j < 1 for j in jobs):
        raise ConfigError(f"speed_level.jobs={list(jobs)} must be positive whole numbers.")
    chosen, skipped = [], []
    auto = resolve_precision("auto", device)
    for batch in dict.fromkeys(batches):  # the training batch first, then the other recipes
        for mode in modes:
            for compile_mode in compile_modes if mode.startswith("compiled") else [None]:
                setting = {"mode": mode, "compile_mode": compile_mode, "allocator": "reuse", "batch": batch,
                           "precision": "auto", "jobs": 1}  # fmt: skip
                if mode == "compiled+graphed":
                    try:
                        check_compile_with_cuda_graph(compile_mode, cuda_graph=True)
                    except ConfigError as error:
                        skipped.append({**setting, "why": f"refused: {error}"})
                        continue
                if mode.endswith("graphed") and device != "cuda":
                    runs_as = f"compiled ({compile_mode})" if compile_mode else "eager"
                    skipped.append({**setting, "why": f"no CUDA: nothing to capture, it runs as {runs_as}"})
                    continue
                chosen.append(setting)
                if mode != "eager":
                    continue
                if device == "cpu":  # glibc's allocator matters on CPU only
                    chosen.append({**setting, "allocator": "default"})
                for precision in dict.fromkeys(p for p in precisions if p != "auto"):
                    if precision == auto:
                        skipped.append({**setting, "precision": precision, "why": f"auto is {auto} here"})
                    else:
                        chosen.append({**setting, "precision": precision})
                for n in dict.fromkeys(j for j in jobs if j > 1):
                    if device != "cpu":
                        skipped.append({**setting, "jobs": n, "why": "jobs at once are measured on a CPU"})
                    elif batch == batches[0]:
                        chosen.append({**setting, "jobs": n})
    return chosen, skipped


def label(setting: dict) -> str:
    """``compiled (default) + graphed``, ``eager, glibc's default allocator``, ``eager, 32-true``,
    ``eager, 2 jobs at once``, ..."""
    compiled = f"compiled ({setting['compile_mode']})"
    text = {"eager": "eager", "compiled": compiled, "graphed": "graphed",
            "compiled+graphed": f"{compiled} + graphed"}[setting["mode"]]  # fmt: skip
    text += ", glibc's default allocator" if setting["allocator"] == "default" else ""
    text += f", {setting['precision']}" if setting.get("precision", "auto") != "auto" else ""
    return text + (f", {setting['jobs']} jobs at once" if setting.get("jobs", 1) > 1 else "")


def training_command(conv: str, setting: dict, channels_last: bool, overrides: Sequence[str]) -> str:
    """The ``train.py`` command that trains the way ``setting`` ran (several jobs at once: a sweep of seeds)."""
    jobs = setting.get("jobs", 1)
    sweep = ["-m", "hydra/launcher=local_parallel", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    seeds = [f"seed={','.join(map(str, range(jobs)))}"] if jobs > 1 else []
    args = [*sweep, f"model.conv={conv}", *seeds, *(o for o in overrides if not o.startswith("model.conv="))]
    if setting["compile_mode"]:
        args.append(f"module.compile={setting['compile_mode']}")
    if setting["mode"].endswith("graphed"):
        args.append("module.cuda_graph=true")
    if not channels_last:
        args.append("module.channels_last=false")
    if setting["allocator"] == "default":
        args.append("reuse_freed_memory=false")
    if setting.get("precision", "auto") != "auto":
        args.append(f"trainer.precision={setting['precision']}")
    return "python train.py " + " ".join(args)


def training_step(module: ImageClassifier, graphed: bool, images: torch.Tensor, labels: torch.Tensor,
                  use_bf16: bool) -> tuple[Callable[[], torch.Tensor], GraphedStep | None]:  # fmt: skip
    """One optimizer step of ``module`` on a fixed batch, as training runs it (in bf16 autocast if ``use_bf16``);
    returns the step (giving the loss before the update, unsynchronised) and the GraphedStep when graphed."""
    fused = {"fused": True} if graphed else {}  # as ImageClassifier.configure_optimizers gives the graphed path
    optimizer = torch.optim.SGD(param_groups(module.net), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                **fused)  # fmt: skip
    graphed_step = GraphedStep(module.loss_and_logits, list(module.net.parameters())) if graphed else None
    device_type = images.device.type

    def step() -> torch.Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16):
            if graphed_step is not None:
                loss = graphed_step(images, labels)[0]
            else:
                optimizer.zero_grad(set_to_none=True)
                loss = module.loss_and_logits(images, labels)[0]
                loss.backward()
        optimizer.step()
        return loss.detach()

    return step, graphed_step


class CudaGraphSkips(logging.Handler):
    """Inductor's reasons for not using the CUDA graphs a compile mode asked for (its ``cudagraphs`` log)."""

    LOGGER = "torch._inductor.cudagraph_utils.__cudagraphs"

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        torch._logging.set_logs(cudagraphs=True)
        logging.getLogger(self.LOGGER).addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @staticmethod
    def count() -> int:
        """Inductor's own count of skipped CUDA graphs in this process (it counts those it does not log, too)."""
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])


def cuda_graph_use(device: str, compile_mode: str | None, graphed_step: GraphedStep | None,
                   skips: CudaGraphSkips) -> str:  # fmt: skip
    """Whether the step really replayed CUDA graphs, and whose; a graph Inductor skipped says so, with its reason."""
    if device != "cuda":
        return "no (CPU)"
    used = []
    if graphed_step is not None:
        used.append("yes (module.cuda_graph)" if graphed_step.graph is not None else "no: nothing was captured")
    if compile_mode in CUDA_GRAPH_COMPILE_MODES:
        count = skips.count()
        reason = f": {skips.messages[0]}" if skips.messages else ""
        used.append(f"Inductor skipped {count} graph(s){reason}" if count else "yes (Inductor)")
    return "; ".join(used) or "no"


def measure_step(model_kwargs: dict, conv: str, mode: str, compile_mode: str | None, allocator: str, device: str,
                 batch: int, eval_batch: int, channels_last: bool, min_run_time: float, precision: str = "auto",
                 jobs: int = 1, threads: int | None = None, barrier: str | None = None) -> dict:  # fmt: skip
    """In this process: the losses of the first steps, the steady training step, the evaluation forward at
    ``eval_batch`` (as validation and test run it), compile time apart, and whether CUDA graphs were used.

    With ``barrier`` (a directory shared by ``jobs`` processes), the timing starts when all are ready and each
    keeps stepping after its own timing until all are done, so every one is timed under the others' load."""
    if allocator == "reuse":
        reuse_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    skips = CudaGraphSkips()
    graphed = mode.endswith("graphed")
    torch.manual_seed(0)  # the same initial weights and batches in every process, whatever the device
    module = ImageClassifier(
        net={"_target_": "sepdense.models.DenseNet", **model_kwargs, "conv": conv},
        class_names=[str(i) for i in range(10)],
        label_smoothing=0.1,
        channels_last=channels_last,
        compile=compile_mode or False,
        cuda_graph=graphed,
    ).to(device)
    images, labels = torch.randn(batch, 3, 32, 32).to(device), torch.randint(0, 10, (batch,)).to(device)
    eval_images = torch.randn(eval_batch, 3, 32, 32).to(device)
    resolved = resolve_precision(precision, device)  # as training resolves trainer.precision
    use_bf16 = str(resolved).startswith("bf16")
    step, graphed_step = training_step(module, graphed, images, labels, use_bf16)
    start = synchronized_clock(images.device)
    losses = [float(step())]  # compiles the training graphs (compiled modes)
    first_step_s = synchronized_clock(images.device) - start
    losses += [float(step()) for _ in range(CHECK_STEPS - 1)]  # warm-up, capture and replays (graphed modes)
    if barrier:
        wait_for_all(Path(barrier), "ready", jobs)
    timed_from = time.time()
    step_ms = time_ms(step, min_run_time)
    timed_to = time.time()

    def evaluate() -> None:
        with torch.no_grad(), torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            module(eval_images)

    module.eval()
    start = synchronized_clock(images.device)
    evaluate()  # compiles the evaluation graph (compiled modes)
    first_eval_s = synchronized_clock(images.device) - start
    for _ in range(2):  # Inductor's CUDA graphs warm up, then record
        evaluate()
    eval_ms = time_ms(evaluate, min_run_time / 2)
    if barrier:
        module.train()
        wait_for_all(Path(barrier), "done", jobs, keep_busy=step)
    compile_s = max(0.0, first_step_s - step_ms / 1000) + max(0.0, first_eval_s - eval_ms / 1000)
    return {
        "timed": [timed_from, timed_to],  # wall-clock window of the step timing (concurrent jobs overlap in it)
        "precision": str(resolved),
        "step_ms": step_ms,
        "eval_ms": eval_ms,
        "compile_s": compile_s if compile_mode else None,
        "losses": losses,
        "cuda_graphs": cuda_graph_use(device, compile_mode, graphed_step, skips),
    }


def wait_for_all(barrier: Path, stage: str, parties: int, keep_busy: Callable[[], object] | None = None) -> None:
    """Mark this process as at ``stage`` in ``barrier`` and wait until ``parties`` processes are (running
    ``keep_busy`` meanwhile, so that the others are still timed under load)."""
    (barrier / f"{stage}.{os.getpid()}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(barrier.glob(f"{stage}.*"))) < parties and time.monotonic() < deadline:
        if keep_busy is None:
            time.sleep(0.01)
        else:
            keep_busy()


def peak_matmul_flops(device: str, dtype: torch.dtype = torch.bfloat16, size: int = 2048,
                      min_run_time: float = 1.0) -> float:  # fmt: skip
    """The machine's peak floating-point rate in practice: FLOP/s of a large square matrix product in ``dtype``
    with every core (oneDNN / cuBLAS), the fastest operation a training step is made of."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / (time_ms(lambda: a @ b, min_run_time) / 1000)


def projected_run_s(step_ms: float, eval_ms: float, compile_s: float | None, batch: int, eval_batch: int,
                    projection: dict) -> float:  # fmt: skip
    """Seconds of the projected run: its training steps (full batches, as the loader drops the last partial
    one) × the step time, its validation and test batches × the evaluation time, and the compile time."""
    steps = (projection["train_split_images"] - projection["val_images"]) // batch
    val_batches = math.ceil(projection["val_images"] / eval_batch)
    test_batches = math.ceil(projection["test_images"] / eval_batch)
    epoch_ms = steps * step_ms + val_batches * eval_ms
    return (projection["epochs"] * epoch_ms + test_batches * eval_ms) / 1000 + (compile_s or 0.0)


def benchmark_speed(
    model_kwargs: dict,
    device: str,
    batch: int,
    eval_batch: int,
    projection: dict,
    modes: Sequence[str] = MODES,
    compile_modes: Sequence[str] = ("default",),
    batches: Sequence[int] = (),
    precisions: Sequence[str] = ("auto",),
    jobs: Sequence[int] = (1,),
    conv_types: Sequence[str] | None = None,
    channels_last: bool = True,
    min_run_time: float = 2.0,
    repeats: int = 1,
    loss_rtol: float = 0.02,
    command_overrides: Sequence[str] = (),
) -> dict:
    """Every setting of :func:`settings` for each conv type, each in ``repeats`` fresh processes (median).

    Returns ``rows`` (per conv type and setting: step and evaluation time, images/s per job and for the
    machine, ratio to eager, compile time, projected run time and minutes per run of a sweep, the share of
    the machine's peak bf16 rate, CUDA graphs used, the largest relative difference of the first losses from
    eager's and whether that is within ``loss_rtol``), ``comparison`` (each conv type ÷ the baseline),
    ``skipped`` (settings left out, with why), ``fastest`` (per conv type, the row at the training batch with
    the fewest minutes per run among those that agree with eager, and its command) and ``peak`` (the machine's
    peak matrix-multiply rates).
    """
    chosen, skipped = settings(modes, compile_modes, device, [batch, *batches], precisions, jobs)
    convs = list(conv_types or ordered_conv_types())
    cores = torch.get_num_threads()
    measured: dict[tuple, list[dict]] = {}
    for _ in range(repeats):
        for setting in chosen:
            for conv in convs:  # the conv types alternate, so load changes hit them alike
                args = {"model_kwargs": model_kwargs, "conv": conv, **setting, "device": device,
                        "eval_batch": eval_batch, "channels_last": channels_last,
                        "min_run_time": min_run_time}  # fmt: skip
                if setting["jobs"] > 1:
                    args["threads"] = max(1, cores // setting["jobs"])
                measured.setdefault((conv, *setting.values()), []).append(_in_subprocesses(args, setting["jobs"]))
    peak = {
        "bf16_tflops": peak_matmul_flops(device) / 1e12,
        "fp32_tflops": peak_matmul_flops(device, torch.float32) / 1e12,
        "threads": cores,
        "method": "2048×2048 matrix product, every core, median of repeated calls",
    }
    macs = {conv: count_macs(DenseNet(**{**model_kwargs, "conv": conv})) for conv in convs}
    rows = []
    for setting in chosen:
        for conv in convs:
            rows.append(_row(conv, setting, measured[(conv, *setting.values())], batch, eval_batch, projection,
                             channels_last, command_overrides))  # fmt: skip
            if "total_images_per_s" in rows[-1]:
                rows[-1]["share_of_bf16_peak"] = (rows[-1]["total_images_per_s"] * TRAIN_FLOPS_PER_MAC * macs[conv]
                                                  / (peak["bf16_tflops"] * 1e12))  # fmt: skip
    _compare_with_eager(rows, loss_rtol)
    return {"rows": rows, "comparison": speed_comparison(rows), "skipped": skipped, "fastest": fastest(rows, convs),
            "peak": peak}  # fmt: skip


def _row(conv: str, setting: dict, runs: list[list[dict]], training_batch: int, eval_batch: int, projection: dict,
         channels_last: bool, overrides: Sequence[str]) -> dict:  # fmt: skip
    """One table row from ``runs`` (per repeat, the results of the setting's concurrent jobs)."""
    row = {"conv": conv, "mode": label(setting), "batch": setting["batch"], "jobs": setting["jobs"],
           "recipe": "training" if setting["batch"] == training_batch else "different recipe (batch)"}  # fmt: skip
    failed = [job["failed"] for run in runs for job in run if "failed" in job]
    if failed:
        return {**row, "status": f"failed: {failed[0]}", "setting": setting}
    jobs = [job for run in runs for job in run]
    step_ms = statistics.median(job["step_ms"] for job in jobs)
    eval_ms = statistics.median(job["eval_ms"] for job in jobs)
    compile_s = statistics.median(job["compile_s"] for job in jobs) if setting["compile_mode"] else None
    projected_min = projected_run_s(step_ms, eval_ms, compile_s, setting["batch"], eval_batch, projection) / 60
    # The machine's rate: each repeat's concurrent jobs together, the median over repeats.
    total = statistics.median(sum(setting["batch"] * 1000 / job["step_ms"] for job in run) for run in runs)
    row.update(
        precision=jobs[0]["precision"],
        step_ms=step_ms,
        images_per_s=setting["batch"] * 1000 / step_ms,
        total_images_per_s=total,
        eval_ms=eval_ms,
        compile_s=compile_s,
        projected_run_min=projected_min,
        minutes_per_run=projected_min / setting["jobs"],
        cuda_graphs=jobs[0]["cuda_graphs"],
        processes=len(jobs),
        step_ms_range=f"{min(job['step_ms'] for job in jobs):,.0f}–{max(job['step_ms'] for job in jobs):,.0f}",
        losses=jobs[0]["losses"],
        timed=[job["timed"] for job in jobs],
        setting=setting,
        command=training_command(conv, setting, channels_last, overrides),
    )
    return row


def _compare_with_eager(rows: list[dict], loss_rtol: float) -> None:
    """Each row's ratio to the eager step (same conv type and batch) and how far its first losses are from eager's."""
    eager = {(r["conv"], r["batch"]): r for r in rows if r.get("setting", {}).get("mode") == "eager"
             and r["setting"]["allocator"] == "reuse" and r["setting"].get("precision", "auto") == "auto"
             and r["setting"].get("jobs", 1) == 1 and "step_ms" in r}  # fmt: skip
    for row in rows:
        reference = eager.get((row["conv"], row["batch"]))
        if "step_ms" not in row or reference is None:
            row["same_function"] = None  # failed, or no eager step to compare with
            continue
        row["× eager"] = reference["step_ms"] / row["step_ms"]
        # The first losses come from the same weights and batch: a step lost, doubled or computed wrongly shows.
        row["loss_vs_eager"] = max(abs(a - b) / abs(b) for a, b in zip(row["losses"], reference["losses"], strict=True))
        row["same_function"] = row["recipe"] == "training" and row["loss_vs_eager"] <= loss_rtol


def fastest(rows: list[dict], convs: Sequence[str]) -> list[dict]:
    """Per conv type, the training-recipe row that agrees with eager and takes the fewest minutes per run (the
    projected run ÷ the jobs that run at once)."""
    out = []
    for conv in convs:
        candidates = [r for r in rows if r["conv"] == conv and r.get("same_function")]
        if candidates:
            best = min(candidates, key=lambda r: r["minutes_per_run"])
            out.append({"conv": conv, "mode": best["mode"], "projected_run_min": best["projected_run_min"],
                        "minutes_per_run": best["minutes_per_run"], "jobs": best["jobs"],
                        "command": best["command"]})  # fmt: skip
    return out


def _in_subprocesses(args: dict, jobs: int = 1) -> list[dict]:
    """``measure_step(**args)`` in ``jobs`` fresh processes at once (timed together through a barrier
    directory when more than one); a failure becomes the row's status, the other rows go on."""
    # Inductor's caches on disk would let one process reuse another's compilation: every one compiles afresh,
    # as a user's first run does.
    env = {**os.environ, "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    with tempfile.TemporaryDirectory(prefix="sepdense-speed-") as barrier:
        payload = json.dumps({**args, **({"barrier": barrier} if jobs > 1 else {})})
        command = [sys.executable, "-m", "sepdense.bench.speed", payload]
        processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                     for _ in range(jobs)]  # fmt: skip
        return [_result(process) for process in processes]


def _result(process: subprocess.Popen) -> dict:
    try:
        stdout, stderr = process.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"failed": "took more than 30 minutes"}
    if process.returncode != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        return {"failed": lines[-1] if lines else f"exit code {process.returncode}"}
    return json.loads(stdout.strip().splitlines()[-1])


EAGER_DEFAULT_ALLOCATOR = label({"mode": "eager", "compile_mode": None, "allocator": "default"})


def speed_comparison(rows: list[dict]) -> list[dict]:
    """Per setting: each conv type's images/s ÷ the baseline's, and (on CPU) ÷ its eager step with glibc's allocator."""
    by_key = {(r["conv"], r["mode"], r["batch"]): r for r in rows if "step_ms" in r}
    out = []
    for (conv, mode, batch), row in by_key.items():
        entry: dict = {"conv": conv, "mode": mode, "batch": batch}
        base = by_key.get((BASELINE_CONV, mode, batch))
        if base is not None and conv != BASELINE_CONV:
            entry[f"images_per_s ÷ {BASELINE_CONV}"] = row["images_per_s"] / base["images_per_s"]
        reference = by_key.get((conv, EAGER_DEFAULT_ALLOCATOR, batch))
        if reference is not None and reference is not row:
            entry["images_per_s ÷ eager, default allocator"] = row["images_per_s"] / reference["images_per_s"]
        if len(entry) > 3:
            out.append(entry)
    return out


# The columns of the printed table (results.json keeps every field).
TABLE_COLUMNS = ("conv", "mode", "precision", "batch", "recipe", "step_ms", "images_per_s", "total_images_per_s",
                 "share_of_bf16_peak", "× eager", "eval_ms", "compile_s", "projected_run_min", "minutes_per_run",
                 "cuda_graphs", "loss_vs_eager", "same_function", "status")  # fmt: skip


def describe(result: dict, projection: dict, loss_rtol: float) -> str:
    """What the table's columns mean, what was left out, and the training command of the fastest row."""
    lines = [
        f"\n`projected_run_min`: {projection['epochs']} epochs of "
        f"{projection['train_split_images'] - projection['val_images']:,} training images (full batches), "
        f"{projection['val_images']:,} validation images per epoch and {projection['test_images']:,} test images "
        "at `eval_ms` per evaluation batch (the partial last ones counted as full), plus `compile_s`; the Lightning "
        "loop's own per-step work and the data loader are not in it. "
        f"`loss_vs_eager`: the largest relative difference of the first {CHECK_STEPS} losses (same weights, same "
        f"batch) from the eager step's; `same_function`: within {loss_rtol} and at the training batch. "
        "`images_per_s`: one job's; `total_images_per_s`: all jobs running at once together (the machine's rate); "
        "`minutes_per_run`: `projected_run_min` ÷ jobs at once, the time per run of a sweep run that way. "
        f"`share_of_bf16_peak`: `total_images_per_s` × {TRAIN_FLOPS_PER_MAC} FLOPs per MAC of a training step "
        "(forward, and a backward of about twice its cost) × the network's MACs per image, over the machine's "
        + (
            f"peak: a {result['peak']['method']}: {result['peak']['bf16_tflops']:.2f} TFLOP/s in bf16 "
            f"({result['peak']['fp32_tflops']:.2f} in fp32) with {result['peak']['threads']} threads."
            if "peak" in result
            else "peak."
        ),
    ]
    for skip in result["skipped"]:
        lines.append(f"- not measured: {label(skip)}, batch {skip['batch']}: {skip['why']}")
    for best in result["fastest"]:
        at_once = (
            f" ({best['jobs']} runs at once, {best['projected_run_min']:,.0f} min each)" if best["jobs"] > 1 else ""
        )
        lines.append(f"\nFastest for {best['conv']}: {best['mode']}, about {best['minutes_per_run']:,.0f} min "
                     f"per run{at_once}:\n\n    {best['command']}")  # fmt: skip
    if not result["fastest"]:
        lines.append("\nNo row was checked against an eager step (add eager to speed_level.modes).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Time one training step (used by benchmark.py's speed level).")
    parser.add_argument("args", type=json.loads, help="the keyword arguments of measure_step, as JSON")
    print(json.dumps(measure_step(**parser.parse_args().args)))
