"""Measurement at the bottom floor: metrics accumulated on the device, latency, MAC counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score
from torch import nn

from sepdense.measure import count_macs, latency_ms
from sepdense.metrics import NEVER, ClassificationStats


def one_hot_logits(preds: list[int], num_classes: int) -> torch.Tensor:
    return nn.functional.one_hot(torch.tensor(preds), num_classes).float()


def test_stats_equal_scikit_learn_and_leave_an_absent_class_out() -> None:
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]  # class 3 has no image in this subset
    preds = [0, 1, 0, 1, 3, 2, 2, 0, 2, 3]  # ... but is predicted twice
    stats = ClassificationStats(4)
    stats.update(one_hot_logits(preds[:6], 4), torch.tensor(labels[:6]), torch.tensor(1.0))
    stats.update(one_hot_logits(preds[6:], 4), torch.tensor(labels[6:]), torch.tensor(3.0))
    out = stats.compute()
    assert out["acc"].item() == pytest.approx(np.mean(np.array(labels) == np.array(preds)))
    assert out["loss"].item() == pytest.approx((6 * 1.0 + 4 * 3.0) / 10)
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        # Macro over the classes among labels or predictions, as scikit-learn and torchmetrics do.
        assert out[name].item() == pytest.approx(fn(labels, preds, average="macro", zero_division=0))
        per_class = fn(labels, preds, average=None, labels=[0, 1, 2], zero_division=0)
        np.testing.assert_allclose(out[f"{name}_per_class"][:3].numpy(), per_class)
        assert torch.isnan(out[f"{name}_per_class"][3])  # absent, not 0.0
    assert out["confusion"].sum() == 10 and out["confusion"][1, 3] == 1


def test_stats_record_the_first_non_finite_step() -> None:
    stats = ClassificationStats(2)
    logits, labels = one_hot_logits([0, 1], 2), torch.tensor([0, 1])
    stats.update(logits, labels, torch.tensor(0.5), step=4)
    assert stats.nonfinite_step.item() == NEVER
    stats.update(logits, labels, torch.tensor(float("nan")), step=5)
    stats.update(logits, labels, torch.tensor(float("inf")), step=7)
    assert stats.nonfinite_step.item() == 5
    stats.reset()
    assert stats.nonfinite_step.item() == NEVER


def test_latency_runs_on_one_thread_on_cpu() -> None:
    threads_seen = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            threads_seen.append(torch.get_num_threads())
            return x * self.scale

    latency_ms(Probe(), (1, 3, 8, 8), min_run_time=0.01)
    assert threads_seen and set(threads_seen) == {1}  # warm-up included: stable on a shared machine


def test_macs_of_one_conv() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    assert count_macs(conv, (1, 8, 10, 10)) == 10 * 10 * 8 * 16 * 9
