"""Measuring the network and the machine: parameters, MACs, timing, latency, peak memory, environment.

The ground floor for cost figures: the Trainer callbacks and ``benchmark.py`` both measure
through these functions, so a figure means the same wherever it is shown.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PACKAGES = ("sepdense", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "hydra-core", "omegaconf", "numpy")
# How batch-1 latency is measured; shown beside every latency figure.
LATENCY_METHOD = "eager, eval mode, batch 1, median of repeated calls after a warm-up; on CPU with 1 thread"
# What memory/peak_mb is; shown beside every peak-memory figure. The same alone or as one of many jobs of a sweep in a
# reused worker process: what earlier jobs freed is handed back before the count starts.
PEAK_MEMORY_METHOD = (
    "peak from the start of fitting to the end of each epoch, over every process of a resumed run: on GPU, memory "
    "allocated by PyTorch; on CPU, the process's resident set size (VmHWM, Linux), counted from a heap whose free "
    "memory was handed back to the system at that start (so it includes Python, PyTorch and the data in memory, not "
    "what earlier sweep jobs freed)"
)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode without gradients and run eagerly, back in its previous mode afterwards.

    Eagerly even when the network was compiled for training (``module.compile``): MACs and latency
    are properties of the network, the same whichever way it is trained, and a batch-1, one-thread
    call would otherwise cost one more compilation of a graph that training never uses.
    """
    was_training = model.training
    model.eval()
    # torch.compiler.set_stance exists from torch 2.6; before it, a compiled network is measured compiled.
    set_stance = getattr(torch.compiler, "set_stance", None)
    try:
        with torch.no_grad(), set_stance("force_eager") if set_stance else contextlib.nullcontext():
            yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass for one input of ``input_shape`` (batch 1).

    Counted by ``torch.utils.flop_counter`` over convolutions and matrix products (2 FLOPs per
    MAC); norms, activations and pooling are not counted, as is usual for MAC figures.
    """
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_shape, device=model_device(model)))
    return counter.get_total_flops() // 2


def time_ms(
    fn: Callable[[], object], min_run_time: float, threads: int | None = None, runs: int | None = None
) -> float:
    """Milliseconds per call of ``fn``, after one warm-up call.

    By default the median of ``blocked_autorange``, which repeats ``fn`` in blocks until
    ``min_run_time`` seconds have passed; with ``runs``, the mean of exactly that many calls (for
    steps of seconds). CUDA is synchronised around the timed calls; ``threads`` defaults to torch's
    current count (training's).
    """
    # torch.utils.benchmark imports cpp_extension, which warns "No CUDA runtime is found" on any machine without one.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    timer = Timer("fn()", globals={"fn": fn}, num_threads=threads or torch.get_num_threads())
    timer.timeit(1)  # warm-up (allocator, kernel selection), with the same thread count as the timed calls
    if runs:
        return 1000 * timer.timeit(runs).mean
    return 1000 * timer.blocked_autorange(min_run_time=min_run_time).median


def latency_ms(
    model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32), min_run_time: float = 0.5, warmup: int = 3
) -> float:
    """Forward time of one input, measured as :data:`LATENCY_METHOD` says: the median of single calls
    repeated for ``min_run_time`` seconds (at least 5), after ``warmup`` calls.

    One thread on CPU: at batch 1 a second thread gains little, and when another process holds a
    core, two threads wait on each other and one forward can take a hundred times longer.
    """
    with eval_mode(model):
        x = torch.zeros(input_shape, device=model_device(model))
        threads = torch.get_num_threads()
        if x.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            for _ in range(warmup):
                model(x)
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < 5 or time.perf_counter() - start < min_run_time:
                begin = time.perf_counter()
                model(x)
                times.append(synchronized_clock(x.device) - begin)
        finally:
            torch.set_num_threads(threads)
    return 1000 * statistics.median(times)


def synchronized_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once ``device`` has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak (see :data:`PEAK_MEMORY_METHOD`): CUDA's allocator statistics, or on Linux the process's
    peak RSS (VmHWM), after handing the memory freed so far back to the system.

    Without the reset, a sweep job would report the peak of an earlier job in the same process
    (joblib reuses its workers); without the hand-back, the memory that job freed (which glibc keeps
    for reuse, ``reuse_freed_memory``) would still count in this job's resident set.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    gc.collect()  # what an earlier job left in reference cycles
    release_freed_memory()
    with contextlib.suppress(OSError):  # other systems: the peak covers the whole process
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets the peak resident set size (Linux ≥ 4.0)


def release_freed_memory() -> bool:
    """Give the memory the C library holds free (all arenas) back to the system: glibc's ``malloc_trim(0)``.

    False where the C library is not glibc.
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def peak_memory_mb(device: torch.device) -> float:
    """The peak since ``reset_peak_memory``, in MiB, as :data:`PEAK_MEMORY_METHOD` defines it."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**10  # kB
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def available_memory_mb() -> float | None:
    """Memory the system can still give processes without swapping (Linux's MemAvailable), in MiB; None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 2**10  # kB
    except (OSError, StopIteration, ValueError):
        return None


def current_rss_mb() -> float:
    """The resident set size of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def git_commit(directory: Path) -> str | None:
    """HEAD of the repository holding ``directory`` ('<sha>-dirty' with uncommitted changes), or None."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def environment() -> dict:
    """What a result needs to be reproduced besides its config: versions, the machine, the git commit."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "packages": versions,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "command": " ".join(sys.argv),
    }


def cpu_name() -> str:
    """The CPU's model name (e.g. 'AMD EPYC'), which ``platform.processor()`` does not give on Linux."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
