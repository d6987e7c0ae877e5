"""trainer.precision=auto: bf16 mixed precision where the device runs bf16 natively, fp32 elsewhere; recorded."""

from __future__ import annotations

import pytest
import torch

from sepdense import precision
from sepdense.precision import resolve_precision


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_a_cpu_follows_its_bf16_instructions(monkeypatch: pytest.MonkeyPatch, native: bool,
                                                      expected: str) -> None:  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in precision.NATIVE_BF16_CHECKS:
        monkeypatch.setattr(torch.cpu, name, lambda: native, raising=False)
    assert resolve_precision("auto") == expected
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("32-true") == "32-true"  # an explicit setting always wins
    assert resolve_precision("bf16-mixed") == "bf16-mixed"


def test_only_amx_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert resolve_precision("auto") == "bf16-mixed"


def test_a_torch_without_the_checks_means_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in precision.NATIVE_BF16_CHECKS:
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert resolve_precision("auto") == "32-true"


def test_a_cpu_run_on_a_gpu_machine_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(precision, "cpu_runs_bf16_natively", lambda: False)
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "32-true"
