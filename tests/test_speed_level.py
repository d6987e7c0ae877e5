"""The speed level's side-by-side rows: precisions, jobs at once (timed together), and the share of the peak."""

from __future__ import annotations

import pytest

from sepdense.bench import speed
from sepdense.bench.speed import benchmark_speed, label, settings, training_command

PROJECTION = {"epochs": 100, "train_split_images": 50000, "val_images": 5000, "test_images": 10000}
TINY = {"block_config": [1, 1], "growth_rate": 4}


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "resolve_precision", lambda p, device="auto": "bf16-mixed" if p == "auto" else p)


def test_eager_gets_the_other_precisions_and_jobs_at_once_at_the_training_batch(bf16_cpu: None) -> None:
    chosen, skipped = settings(["eager", "compiled"], ["default"], "cpu", [128, 256], ["auto", "32-true"], [1, 2])
    labels = [(label(s), s["batch"]) for s in chosen]
    assert labels == [
        ("eager", 128), ("eager, glibc's default allocator", 128), ("eager, 32-true", 128),
        ("eager, 2 jobs at once", 128), ("compiled (default)", 128),
        ("eager", 256), ("eager, glibc's default allocator", 256), ("eager, 32-true", 256),
        ("compiled (default)", 256),
    ]  # fmt: skip
    assert not skipped
    _, on_gpu_skipped = settings(["eager"], [], "cuda", [128], ["auto"], [1, 2])
    assert [(s["jobs"], s["why"]) for s in on_gpu_skipped] == [(2, "jobs at once are measured on a CPU")]


def test_a_precision_that_auto_already_is_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "resolve_precision", lambda p, device="auto": "32-true" if p == "auto" else p)
    chosen, skipped = settings(["eager"], [], "cpu", [128], ["auto", "32-true"], [1])
    assert [label(s) for s in chosen] == ["eager", "eager, glibc's default allocator"]
    assert [s["why"] for s in skipped] == ["auto is 32-true here"]


def test_commands_train_the_way_the_row_ran() -> None:
    base = {"mode": "eager", "compile_mode": None, "allocator": "reuse", "batch": 128}
    assert training_command("standard", {**base, "precision": "32-true", "jobs": 1}, True, []) == (
        "python train.py model.conv=standard trainer.precision=32-true"
    )
    assert training_command("separable", {**base, "precision": "auto", "jobs": 2}, True, ["model.growth_rate=4"]) == (
        "python train.py -m hydra/launcher=local_parallel hydra.launcher.n_jobs=2 model.conv=separable seed=0,1 "
        "model.growth_rate=4")  # fmt: skip
    with pytest.raises(Exception, match=r"speed_level.jobs=\[0\] must be positive whole numbers"):
        settings(["eager"], [], "cpu", [128], ["auto"], [0])


def test_jobs_at_once_are_timed_together_and_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two fresh processes of the tiny network at batch 8, against one, in fp32 and in what auto gives.
    monkeypatch.setattr(speed, "peak_matmul_flops", lambda device, dtype=None: 1e12)
    result = benchmark_speed(TINY, "cpu", batch=8, eval_batch=16, projection=PROJECTION, modes=["eager"],
                             precisions=["auto", "32-true"], jobs=[1, 2], conv_types=["separable"],
                             min_run_time=0.2)  # fmt: skip
    rows = {r["mode"]: r for r in result["rows"]}
    assert {"eager", "eager, 2 jobs at once"} <= set(rows)
    pair, single = rows["eager, 2 jobs at once"], rows["eager"]
    assert pair["processes"] == 2 and pair["jobs"] == 2 and single["processes"] == 1
    (a_from, a_to), (b_from, b_to) = pair["timed"]
    assert max(a_from, b_from) < min(a_to, b_to)  # the barrier: the two jobs' timing windows overlap
    assert pair["minutes_per_run"] == pytest.approx(pair["projected_run_min"] / 2)
    assert pair["total_images_per_s"] > pair["images_per_s"]  # both jobs' images, not one's
    assert single["total_images_per_s"] == pytest.approx(single["images_per_s"])
    # The share of the peak is the training step's FLOPs at the machine's rate over the (here 1 TFLOP/s) peak.
    macs = speed.count_macs(speed.DenseNet(**TINY, conv="separable"))
    assert pair["share_of_bf16_peak"] == pytest.approx(pair["total_images_per_s"] * 6 * macs / 1e12)
    assert pair["same_function"] and single["same_function"]
    if "eager, 32-true" in rows:  # on a CPU with bf16 instructions, auto is bf16: fp32 is its own row
        assert rows["eager, 32-true"]["precision"] == "32-true" and rows["eager, 32-true"]["same_function"]
    assert result["peak"]["bf16_tflops"] == pytest.approx(1.0)
