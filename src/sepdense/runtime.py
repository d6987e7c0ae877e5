"""Running a network fast: memory layout and ``torch.compile`` (for training and the benchmark alike), and
the CUDA-graph-replayed training step."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
from torch import Tensor, nn

from sepdense.errors import ConfigError

# torch.compile's modes; "default" is torch's own default. reduce-overhead adds CUDA graphs (GPU only).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The modes whose Inductor options set triton.cudagraphs (torch._inductor.list_mode_options): they record
# CUDA graphs of their own, which cannot be captured again inside GraphedStep's graph.
CUDA_GRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def check_compile_mode(mode: str | bool | None) -> str | None:
    """The torch.compile mode named by ``module.compile`` (None: do not compile)."""
    if mode in (None, False, "false", "none"):
        return None
    if mode is True:
        return "default"
    if mode not in COMPILE_MODES:
        raise ConfigError(
            f"module.compile={mode!r} is not a torch.compile mode; use false or one of: {', '.join(COMPILE_MODES)}."
        )
    return str(mode)


def check_compile_with_cuda_graph(compile_mode: str | bool | None, cuda_graph: bool) -> None:
    """Refuse, in one line, a ``module.compile`` mode that records CUDA graphs together with ``module.cuda_graph``."""
    mode = check_compile_mode(compile_mode)
    if cuda_graph and mode in CUDA_GRAPH_COMPILE_MODES:
        others = [m for m in COMPILE_MODES if m not in CUDA_GRAPH_COMPILE_MODES]
        raise ConfigError(
            f"module.compile={mode} records CUDA graphs of its own, which cannot run inside module.cuda_graph=true's "
            f"graph; with module.cuda_graph=true use module.compile={' or '.join(others)}, or drop module.cuda_graph."
        )


def prepare_network(net: nn.Module, channels_last: bool = False, compile_mode: str | bool | None = None) -> nn.Module:
    """``net`` in the requested memory layout, compiled in place if asked (``nn.Module.compile``).

    Compiling in place keeps the module and its parameter names, so checkpoints of compiled and
    eager runs are interchangeable.
    """
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    mode = check_compile_mode(compile_mode)
    if mode is not None:
        net.compile(mode=None if mode == "default" else mode)
    return net


def to_layout(images: Tensor, channels_last: bool) -> Tensor:
    return images.contiguous(memory_format=memory_format(channels_last))


class GraphedStep:
    """Forward, loss and backward of a training step, captured once as a CUDA graph and then replayed.

    At batch 128 this network's eager step is bound by launching ~2,000 small kernels from Python;
    a replay launches them all at once. The first ``warmup`` calls run eagerly on a side stream
    (cuDNN picks its algorithms there, and a ``torch.compile``'d network compiles there, as capture
    requires: nothing may compile or synchronise during capture); the next call captures. From then on
    each call copies the batch into static input tensors and replays: the parameters' ``.grad``
    are rewritten in place (never set to None again), BatchNorm running statistics update as in
    eager mode, and the optimizer step stays outside the graph (one fused kernel), so the learning
    rate schedule, checkpoints and Lightning's step counting are untouched.

    ``loss_and_logits(images, labels)`` must keep shapes fixed (the training loader drops the
    last partial batch). On a CPU there is nothing to capture: every call runs eagerly, the same
    code path on any machine.
    """

    def __init__(self, loss_and_logits: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], params: list[Tensor],
                 warmup: int = 3) -> None:  # fmt: skip
        self.loss_and_logits, self.params, self.warmup = loss_and_logits, params, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, Tensor] = {}

    def _clear_grads(self) -> None:
        for param in self.params:
            param.grad = None

    def _eager(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        self._clear_grads()
        loss, logits = self.loss_and_logits(images, labels)
        loss.backward()
        return loss.detach(), logits.detach()

    @staticmethod
    def _autocast_as_captured() -> torch.autocast:
        """The surrounding autocast without its weight cache, which would hold casts made during capture.

        Warm-up runs under it too: the autocast state is part of a compiled network's guards, so a
        different one at capture would recompile the network inside the capture, which fails.
        """
        return torch.autocast("cuda", torch.get_autocast_dtype("cuda"), torch.is_autocast_enabled("cuda"),
                              cache_enabled=False)  # fmt: skip

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if images.device.type != "cuda":
            return self._eager(images, labels)
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), self._autocast_as_captured():
                out = self._eager(images, labels)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self._capture(images, labels)
        self.static["images"].copy_(images)
        self.static["labels"].copy_(labels)
        self.graph.replay()
        return self.static["loss"], self.static["logits"]

    def _capture(self, images: Tensor, labels: Tensor) -> None:
        self.static = {"images": images.clone(), "labels": labels.clone()}
        self._clear_grads()  # the graph's backward allocates .grad in its own memory pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), self._autocast_as_captured():
            loss, logits = self.loss_and_logits(self.static["images"], self.static["labels"])
            loss.backward()
        self.static.update(loss=loss.detach(), logits=logits.detach())


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the OS; False where that is not glibc.

    PyTorch's CPU tensors come from malloc, and glibc serves large blocks with fresh ``mmap`` calls
    and unmaps them when freed, so every large activation of every training step is page-faulted
    in (and zeroed by the kernel) again: on our 2-core machine 3–5 s of system time in each step of
    the default model. With both thresholds raised, freed blocks stay in the heap and are reused.
    The cost: the process keeps its peak memory. It affects only allocations made afterwards.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        largest = ctypes.c_int(2**31 - 1)
        return libc.mallopt(M_MMAP_THRESHOLD, largest) == 1 and libc.mallopt(M_TRIM_THRESHOLD, largest) == 1
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return False
