"""Timing helpers on top of ``torch.utils.benchmark`` (warm-up, device synchronisation, thread count)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.benchmark import Timer


def time_ms(fn: Callable[[], object], min_run_time: float) -> float:
    """Median milliseconds per call of ``fn``, after one warm-up call.

    ``blocked_autorange`` repeats ``fn`` in blocks until ``min_run_time`` seconds have passed and
    synchronises CUDA around each block; the thread count is what training uses.
    """
    fn()
    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return 1000 * timer.blocked_autorange(min_run_time=min_run_time).median
