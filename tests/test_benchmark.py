"""Benchmark: layer counts against the closed-form formulas, BN folding, the speed level, and a tiny run of
benchmark.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import run_entry

from sepdense.bench.layer import layer_row
from sepdense.bench.speed import MODES, benchmark_speed, settings
from sepdense.models import DenseNet, SeparableConv2d
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
    data_rows, data_summary = results["levels"]["data"], results["summary"]["data"]
    assert data_summary["speedup"] == pytest.approx(data_rows[0]["images_per_s"] / data_rows[1]["images_per_s"])
    # The speedup itself is a figure the benchmark reports (README), not a test: a timing ratio fails whenever
    # another process holds a core. Here: both pipelines were timed.
    assert all(row["images_per_s"] > 0 for row in data_rows[:2]), data_rows
    for name in ("layer.csv", "model.csv", "data.csv"):
        with open(out / name) as f:
            assert len(list(csv.DictReader(f))) >= 2
    markdown = (out / "results.md").read_text()
    assert "## Layer level" in markdown and "## Model level" in markdown and "## Data pipeline" in markdown
    assert "`share_of_mac_saving_realised`\n= (1 − training-step time ratio) / (1 − MAC ratio)" in markdown
    for png in ("layer_gap.png", "model_costs.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The default run's sizes (conf/benchmark.yaml, speed_level.projection; checked against training's config below).
PROJECTION = {"epochs": 100, "train_split_images": 50000, "val_images": 5000, "test_images": 10000}


def test_speed_level_times_each_mode_projects_the_run_and_names_the_fastest() -> None:
    # Graphed modes have nothing to capture on a CPU and compiling is slow here, so this runs the eager
    # settings of one conv type (2 fresh processes) and checks what is left out, and why; the GPU's own
    # rows run there.
    result = benchmark_speed({"block_config": [1, 1], "growth_rate": 4}, "cpu", batch=8, eval_batch=16,
                             projection=PROJECTION, modes=["eager", "graphed", "compiled+graphed"],
                             compile_modes=["default", "reduce-overhead"], conv_types=["separable"],
                             min_run_time=0.05, command_overrides=["model.growth_rate=4"])  # fmt: skip
    rows = {(r["conv"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {("separable", "eager"), ("separable", "eager, glibc's default allocator")}
    why = {(s["mode"], s["compile_mode"]): s["why"] for s in result["skipped"]}
    assert why[("graphed", None)] == "no CUDA: nothing to capture, it runs as eager"
    assert why[("compiled+graphed", "default")].startswith("no CUDA")
    assert why[("compiled+graphed", "reduce-overhead")].startswith("refused: module.compile=reduce-overhead records")
    for row in rows.values():
        # 45,000 training images in 5,625 batches of 8; 313 and 625 evaluation batches of 16 (the last ones partial)
        minutes = (100 * (5625 * row["step_ms"] + 313 * row["eval_ms"]) + 625 * row["eval_ms"]) / 60_000
        assert row["projected_run_min"] == pytest.approx(minutes)
        assert row["images_per_s"] == pytest.approx(8000 / row["step_ms"]) and row["cuda_graphs"] == "no (CPU)"
        assert row["losses"][-1] < row["losses"][0] - 0.05  # the steps train: six updates on one batch
        assert row["same_function"] and row["loss_vs_eager"] < 1e-6  # the allocator changes no number
    for best in result["fastest"]:
        candidates = [r for r in rows.values() if r["conv"] == best["conv"]]
        assert best["projected_run_min"] == min(r["projected_run_min"] for r in candidates)
        assert best["command"].startswith(f"python train.py model.conv={best['conv']} model.growth_rate=4")
    assert [b["conv"] for b in result["fastest"]] == ["separable"]


def test_the_speed_check_tells_a_lost_step_and_another_recipe_from_eager() -> None:
    from sepdense.bench.speed import _compare_with_eager

    eager_losses = [2.35, 2.28, 2.20, 2.11, 2.02, 1.94]  # measured: the test's tiny network, separable, batch 8

    def row(mode: str, losses: list[float], batch: int = 8) -> dict:
        return {"conv": "standard", "mode": mode, "batch": batch, "step_ms": 10.0, "losses": losses,
                "recipe": "training" if batch == 8 else "different recipe (batch)",
                "setting": {"mode": mode, "allocator": "reuse"}}  # fmt: skip

    rows = [
        row("eager", eager_losses),
        row("graphed", eager_losses[:3] + eager_losses[4:] + [1.86]),
        row("compiled", [x * (1 + 1e-4) for x in eager_losses]),
        row("eager", eager_losses, batch=16),
    ]
    _compare_with_eager(rows, loss_rtol=0.02)
    assert [r["same_function"] for r in rows] == [True, False, True, False]


def test_the_speed_levels_defaults_are_the_default_training_run(compose_train_cfg) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    train = compose_train_cfg()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
        bench = compose(config_name="benchmark", overrides=["preset=speed"])
    speed = bench.speed_level
    assert list(bench.levels) == ["speed"] and list(speed.modes) == list(MODES)
    assert dict(speed.projection) == {**PROJECTION, "val_images": train.data.val_size}
    assert speed.projection.epochs == train.trainer.max_epochs
    assert (speed.batch, speed.eval_batch) == (train.data.batch_size, train.data.eval_batch_size)
    chosen, skipped = settings(speed.modes, speed.compile_modes, "cuda", [speed.batch])
    assert [(s["mode"], s["compile_mode"]) for s in chosen] == [
        ("eager", None), ("compiled", "default"), ("compiled", "reduce-overhead"),
        ("compiled", "max-autotune-no-cudagraphs"), ("graphed", None), ("compiled+graphed", "default"),
        ("compiled+graphed", "max-autotune-no-cudagraphs"),
    ]  # fmt: skip
    assert [(s["mode"], s["compile_mode"]) for s in skipped] == [("compiled+graphed", "reduce-overhead")]


def test_model_level_times_the_conv_types_side_by_side_within_each_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from sepdense.bench import model

    order: list[tuple[str, str, bool]] = []

    def timed(what: str):
        def record(net: torch.nn.Module, setting: dict, *args: object, **kwargs: object) -> dict:
            conv = "separable" if any(isinstance(m, SeparableConv2d) for m in net.modules()) else "standard"
            order.append((what, conv, setting["channels_last"]))
            return {"latency_b1_ms": 1.0, "inference_images_per_s": 1.0, "train_step_ms": 1.0,
                    "train_images_per_s": 1.0}  # fmt: skip

        return record

    monkeypatch.setattr(model, "inference_timings", timed("inference"))
    monkeypatch.setattr(model, "train_timings", timed("train"))

    def memory(kwargs: dict, batch: int, channels_last: bool) -> dict:
        order.append(("memory", kwargs["conv"], channels_last))
        return {"step_peak_mb": 1.0}

    monkeypatch.setattr(model, "measure_in_subprocess", memory)
    rows, _ = model.benchmark_model({"block_config": [1, 1], "growth_rate": 4}, "cpu", 4, 4, 0.01, with_compile=False)
    measured = [(conv, channels_last) for what, conv, channels_last in order if what == "train"]
    # NCHW: standard then separable; channels_last: standard then separable (not every standard setting first).
    assert measured == [("standard", False), ("separable", False), ("standard", True), ("separable", True)]
    memory = [(conv, channels_last) for what, conv, channels_last in order if what == "memory"]
    assert memory == measured
    assert [r["conv"] for r in rows] == ["standard"] * 3 + ["separable"] * 3  # the table stays grouped by conv type
