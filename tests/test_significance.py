"""Paired significance and the accuracy-versus-cost fronts, on predictions and sweeps with a known answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from sepdense.report import write_report
from sepdense.report.significance import PairingError, bootstrap_difference, compare, mcnemar
from sepdense.report.tradeoff import Point, ahead_at_equal_cost, pareto_front
from sepdense.runs import CONFIG_FILE, METRICS_FILE, Run, load_run, write_predictions


def test_mcnemar_of_identical_predictions_is_one() -> None:
    right = np.random.default_rng(0).random(500) < 0.8
    assert mcnemar(right, right) == (0, 0, 1.0)
    assert bootstrap_difference(right, right) == (0.0, 0.0)


def test_mcnemar_of_a_one_sided_disagreement_is_the_exact_binomial() -> None:
    baseline = np.zeros(100, dtype=bool)
    other = baseline.copy()
    other[:7] = True  # the other conv type gets 7 more images right, and loses none
    b, c, p = mcnemar(baseline, other)
    assert (b, c) == (0, 7)
    assert p == pytest.approx(stats.binomtest(7, 7, 0.5).pvalue) and p == pytest.approx(2 * 0.5**7)
    low, high = bootstrap_difference(baseline, other)
    assert 0 <= low < 0.07 < high <= 0.15  # the interval holds the observed +7 points


def test_bootstrap_matches_scipy_on_the_same_resamples() -> None:
    rng = np.random.default_rng(1)
    base, other = rng.random(2000) < 0.7, rng.random(2000) < 0.75
    expected = stats.bootstrap((other.astype(float), base.astype(float)),
                               lambda o, b, axis: o.mean(axis) - b.mean(axis), paired=True, vectorized=True,
                               n_resamples=2000, method="percentile", rng=np.random.default_rng(0))  # fmt: skip
    assert bootstrap_difference(base, other) == pytest.approx(
        (expected.confidence_interval.low, expected.confidence_interval.high)
    )


def fake_run(path: Path, conv: str, seed: int, growth_rate: int, accuracy: float, macs: float, fit_s: float) -> Run:
    """A run directory as training leaves it, with predictions that give ``accuracy`` on 2,000 images."""
    path.mkdir(parents=True)
    (path / CONFIG_FILE).parent.mkdir()
    OmegaConf.save({"seed": seed, "model": {"conv": conv, "growth_rate": growth_rate, "block_config": [2, 2]}},
                   path / CONFIG_FILE)  # fmt: skip
    labels = np.arange(2000) % 10
    rng = np.random.default_rng(seed * 100 + growth_rate + (conv == "separable"))
    right = rng.permutation(2000) < round(accuracy * 2000)
    preds = np.where(right, labels, (labels + 1) % 10)
    write_predictions(path, {"index": np.arange(2000), "label": labels, "logits": np.eye(10)[preds]},
                      [f"c{i}" for i in range(10)])  # fmt: skip
    metrics = {"test/acc": float(right.mean()), "model/macs": macs, "time/fit_s": fit_s, "model/params": macs / 300}
    (path / METRICS_FILE).write_text(json.dumps(metrics))
    return load_run(path)


def test_pairing_without_a_partner_seed_fails_clearly(tmp_path: Path) -> None:
    baseline = [fake_run(tmp_path / "s0", "standard", 0, 12, 0.8, 3e8, 100)]
    others = [fake_run(tmp_path / f"p{seed}", "separable", seed, 12, 0.8, 2e8, 90) for seed in (0, 1)]
    with pytest.raises(PairingError, match=r"p1 \(seed 1\): no standard run with the same seed .* seed=1"):
        compare(baseline, others)


def test_a_seed_twice_on_either_side_fails_clearly(tmp_path: Path) -> None:
    baseline = [fake_run(tmp_path / "s0", "standard", 0, 12, 0.8, 3e8, 100)]
    twice = [fake_run(tmp_path / name, "separable", 0, 12, 0.8, 2e8, 90) for name in ("p0", "q0")]
    with pytest.raises(PairingError, match=r"q0 and p0 are both separable runs with seed 0; keep one"):
        compare(baseline, twice)
    with pytest.raises(PairingError, match=r"q0 and p0 are both separable runs with seed 0; keep one"):
        compare(twice, baseline)


def test_a_tradeoff_sweep_reports_significance_and_who_is_ahead_at_equal_cost(tmp_path: Path) -> None:
    # Three widths × two seeds; separable is 2 points better at equal MACs: at each width it costs half
    # the MACs for the accuracy standard reaches at those MACs, plus 2 points.
    sweep = tmp_path / "sweep"
    for growth_rate, macs in ((6, 1e8), (12, 3e8), (24, 9e8)):
        accuracy = 0.6 + 0.05 * np.log(macs / 1e8)
        for seed in (0, 1):
            fake_run(sweep / f"standard_k{growth_rate}_s{seed}", "standard", seed, growth_rate, accuracy, macs,
                     macs / 1e6)  # fmt: skip
            fake_run(sweep / f"separable_k{growth_rate}_s{seed}", "separable", seed, growth_rate,
                     0.62 + 0.05 * np.log(macs / 2e8), macs / 2, macs / 1e6)  # fmt: skip
    summary = json.loads((write_report(sweep) / "summary.json").read_text())
    assert "At equal MACs" in summary["findings"] and "separable is ahead of standard by" in summary["findings"]
    assert "At equal measured training time" in summary["findings"]
    assert len(summary["significance"]) == 3  # one comparison per width, each over two seeds
    assert all(len(c["pairs"]) == 2 and c["t_test"] is not None for c in summary["significance"])
    assert "over 2 seeds" in summary["findings"]
    markdown = (sweep / "report" / "report.md").read_text()
    assert "## Is the difference real?" in markdown and "growth_rate=24" in markdown
    assert (sweep / "report" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"


def test_pareto_front_keeps_only_undominated_points(tmp_path: Path) -> None:
    runs = {name: fake_run(tmp_path / name, "standard", 0, k, acc, macs, 1.0)
            for name, k, acc, macs in (("a", 6, 0.70, 1e8), ("b", 12, 0.65, 2e8), ("c", 24, 0.80, 4e8))}  # fmt: skip
    points = [Point("standard", name, [run]) for name, run in runs.items()]
    assert [p.setting for p in pareto_front(points, "model/macs")] == ["a", "c"]  # b costs more than a, scores less
    assert ahead_at_equal_cost(points[:1], points, "model/macs") is None  # one setting: nothing to interpolate
