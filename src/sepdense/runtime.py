"""Preparing a network to run: memory layout and ``torch.compile``, the same for training and the benchmark."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sepdense.errors import ConfigError

# torch.compile's modes; "default" is torch's own default. reduce-overhead adds CUDA graphs (GPU only).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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
