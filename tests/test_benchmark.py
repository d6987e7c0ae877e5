"""Benchmark: layer counts against the closed-form formulas, BN folding, and a tiny run of benchmark.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import run_entry

from sepdense.bench.layer import layer_row
from sepdense.models import DenseNet
from sepdense.models.fusion import count_batchnorms, fold_batchnorms


@pytest.mark.parametrize(("channels", "size", "k"), [(16, 32, 3), (64, 8, 5), (7, 5, 3)])
def test_layer_counts_match_the_closed_form(channels: int, size: int, k: int) -> None:
    std = layer_row("standard", channels, size, k, batch=2, min_run_time=0.001, device="cpu")
    sep = layer_row("separable", channels, size, k, batch=2, min_run_time=0.001, device="cpu")
    c, hw = channels, size * size
    assert std["params"] == c * c * k * k and std["macs"] == hw * c * c * k * k
    assert sep["params"] == c * k * k + c * c and sep["macs"] == hw * (c * k * k + c * c)
    assert sep["macs"] / std["macs"] == pytest.approx(1 / c + 1 / k**2)
    assert std["forward_ms"] > 0 and sep["forward_backward_ms"] > 0


@pytest.mark.parametrize(("conv", "mid_norm"), [("standard", False), ("separable", False), ("separable", True)])
def test_folded_batchnorms_give_the_same_logits(conv: str, mid_norm: bool) -> None:
    torch.manual_seed(0)
    net = DenseNet(conv=conv, block_config=(2, 2, 2, 2), separable_mid_norm=mid_norm)
    for module in net.modules():  # non-trivial statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    folded = fold_batchnorms(net)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)
    bottlenecks, mids = 8, (9 if mid_norm else 0)  # one per dense layer; one per separable conv
    assert count_batchnorms(net) - count_batchnorms(folded) == bottlenecks + mids


@pytest.mark.slow
def test_benchmark_entry_point_writes_every_output(tmp_path: Path) -> None:
    run_entry(
        "benchmark.py",
        "preset=quick",
        "layer_level.channels=[8]",
        "layer_level.sizes=[8,4]",
        "layer_level.kernels=[3,5]",
        "model.block_config=[1,1,1,1]",
        "model_level.inference_batch=8",
        "model_level.memory=true",
        "data.batch_size=16",
        "data.source.num_train=600",
        "data.source.num_test=100",
        "data.val_size=100",
        "data_level.batches=4",
        log_dir=tmp_path,
    )
    (out,) = (tmp_path / "benchmark" / "runs").iterdir()
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["cpu_threads"] >= 1 and results["machine"]["device"] == "cpu"
    layer = results["levels"]["layer"]
    assert len(layer) == 2 * 2 * 2  # 2 sizes × 2 kernels × 2 conv types
    for key in ("conv", "channels", "size", "k", "params", "macs", "forward_ms", "forward_backward_ms"):
        assert all(key in row for row in layer), key
    for row in results["levels"]["layer_comparison"]:
        assert row["mac_ratio_measured"] == pytest.approx(row["mac_ratio_theory"])
    model = results["levels"]["model"]
    assert {(r["conv"], r["channels_last"], bool(r.get("bn_folded"))) for r in model} == {
        (conv, cl, folded) for conv in ("standard", "separable") for cl, folded in ((False, False), (True, False),
                                                                                    (False, True))
    }  # fmt: skip
    for row in (r for r in model if not r.get("bn_folded")):
        for key in ("params", "macs", "latency_b1_ms", "inference_images_per_s", "train_step_ms",
                    "train_images_per_s", "train_peak_memory_mb"):  # fmt: skip
            assert row[key] > 0, key
    comparison = results["levels"]["model_comparison"]
    assert len(comparison) == 3  # NCHW, channels_last, BN-folded
    assert all(0 < row["mac_ratio"] < 1 and 0 < row["param_ratio"] < 1 for row in comparison)
    assert all("share_of_mac_saving_realised" in row for row in comparison if not row["bn_folded"])
    assert results["summary"]["data"]["speedup"] > 0
    for name in ("layer.csv", "model.csv", "data.csv"):
        with open(out / name) as f:
            assert len(list(csv.DictReader(f))) >= 2
    markdown = (out / "results.md").read_text()
    assert "## Layer level" in markdown and "## Model level" in markdown and "## Data pipeline" in markdown
    assert "`share_of_mac_saving_realised`\n= (1 − training-step time ratio) / (1 − MAC ratio)" in markdown
    for png in ("layer_gap.png", "model_costs.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
