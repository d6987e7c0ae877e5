"""Paired significance and the accuracy-versus-cost fronts, on predictions and sweeps with a known answer."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from sepdense.report import write_report
from sepdense.report.significance import (
    Comparison,
    PairingError,
    PairResult,
    adjust_by_holm,
    bootstrap_difference,
    compare,
    correctness,
    describe,
    holm,
    mcnemar,
)
from sepdense.report.tradeoff import Point, ahead_at_equal_cost, pareto_front
from sepdense.runs import CONFIG_FILE, METRICS_FILE, Run, load_run, write_predictions

FINGERPRINT = "ab" * 20


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


def paired_correctness(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: both right 60%, only the other 15%, only the baseline 10%: a true difference of +5 points."""
    u = rng.random(n)
    return (u < 0.6) | ((u >= 0.75) & (u < 0.85)), (u < 0.75)


def test_bootstrap_interval_covers_a_known_difference_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(5)
    covered = [low <= 0.05 <= high for low, high in
               (bootstrap_difference(*paired_correctness(rng, 400), seed=r) for r in range(100))]  # fmt: skip
    assert 0.88 <= np.mean(covered) <= 0.99
    # And as wide as the normal approximation of a paired difference of proportions says.
    base, other = paired_correctness(rng, 4000)
    low, high = bootstrap_difference(base, other)
    b, c, n = np.sum(base & ~other), np.sum(~base & other), len(base)
    standard_error = np.sqrt((b + c) / n - ((c - b) / n) ** 2) / np.sqrt(n)
    assert (high - low) / 2 == pytest.approx(1.96 * standard_error, rel=0.1)
    assert low < (c - b) / n < high


def comparison_of(differences_in_images: list[int], images: int = 1000) -> Comparison:
    """A comparison whose seeds differ by the given numbers of test images (other − baseline)."""
    pairs = [PairResult(seed=i, images=images, acc_baseline=0.5, acc_other=0.5 + d / images,
                        only_baseline_right=max(-d, 0) + 3, only_other_right=max(d, 0) + 3, mcnemar_p=1.0,
                        bootstrap_low=0.0, bootstrap_high=0.0, test_fingerprint=FINGERPRINT)
             for i, d in enumerate(differences_in_images)]  # fmt: skip
    return Comparison(conv="separable", baseline="standard", setting="", pairs=pairs)


def test_paired_t_test_is_the_textbook_one() -> None:
    # Differences of 1, 2 and 3 points: mean 2, std 1, t = 2 / (1 / sqrt 3) = 3.464 with 2 degrees of freedom.
    comparison = comparison_of([10, 20, 30])
    p_value, low, high = comparison.t_test()
    assert p_value == pytest.approx(2 * stats.t.sf(2 * np.sqrt(3), df=2))
    assert p_value == pytest.approx(0.07418, abs=1e-5)
    half_width = stats.t.ppf(0.975, df=2) * 0.01 / np.sqrt(3)
    assert (low, high) == pytest.approx((0.02 - half_width, 0.02 + half_width))
    assert not comparison.significant
    line = describe(comparison)
    assert "+2.00 ± 1.00 points over 3 seeds (paired t 95% interval -0.48 to +4.48, p = 0.0742)" in line
    assert "not significant at 5% over 3 seeds" in line


def test_an_identical_difference_in_every_seed_is_not_certainty() -> None:
    # Two seeds that each differ by one test image: no spread, so no t statistic; not p = 0.
    comparison = comparison_of([1, 1], images=256)
    assert comparison.no_spread and comparison.t_test() is None
    assert comparison.p_value == 0.5 and not comparison.significant
    line = describe(comparison)
    assert "+0.39 points in each of 2 seeds (an identical difference in every seed" in line
    assert "exact sign-flip test over seeds p = 0.5" in line and "not significant at 5% over 2 seeds" in line
    assert "p = 0 " not in line and "p = 0)" not in line
    six = comparison_of([4] * 6)  # the sign-flip test can only reach 5% with 6 seeds or more: 2 / 2^6
    assert six.p_value == pytest.approx(2 / 64) and six.significant
    assert comparison_of([0, 0, 0]).p_value == 1.0


def test_seeds_that_agree_are_not_enough_when_test_images_could_give_the_difference(tmp_path: Path) -> None:
    # 4, 4 and 5 more right images of 2,000 in three seeds: the t-test over seeds alone says p < 0.01, but
    # thousands of images differ between the two conv types' predictions, so the images alone could give it.
    base = [fake_run(tmp_path / f"s{seed}", "standard", seed, 12, 0.5, 1e8, 10) for seed in range(3)]
    other = [fake_run(tmp_path / f"p{seed}", "separable", seed, 12, 0.5 + extra / 2000, 1e8, 10)
             for seed, extra in enumerate((4, 4, 5))]  # fmt: skip
    comparison, problems = compare(base, other)
    assert not problems and comparison.t_test()[0] < 0.01
    low, high = comparison.images_interval
    assert low < 0 < high and comparison.images_could_explain and not comparison.significant
    # The same interval by hand: the per-image differences, averaged over seeds, resampled as one.
    per_image = np.mean([correctness(o)[1].astype(int) - correctness(b)[1].astype(int)
                         for o, b in zip(other, base, strict=True)], axis=0)  # fmt: skip
    assert per_image.mean() == pytest.approx(np.mean([4, 4, 5]) / 2000)
    assert high - low == pytest.approx(2 * 1.96 * per_image.std() / np.sqrt(len(per_image)), rel=0.15)
    line = describe(comparison)
    assert "not significant at 5% over 3 seeds (the seeds agree, but the test images alone could give" in line
    # A difference the images cannot explain: 200 more right images in every seed, with some spread.
    strong = [fake_run(tmp_path / f"q{seed}", "separable", seed, 12, 0.5 + extra / 2000, 1e8, 10)
              for seed, extra in enumerate((200, 210, 190))]  # fmt: skip
    comparison, _ = compare(base, strong)
    assert comparison.images_interval[0] > 0 and comparison.significant


def test_sign_flip_test_equals_scipy_permutation_test() -> None:
    comparison = comparison_of([12, -3, 7, 9, 4, -1, 15])
    diffs = comparison.differences
    expected = stats.permutation_test((diffs, np.zeros_like(diffs)), lambda x, y, axis: np.mean(x - y, axis=axis),
                                      permutation_type="samples", n_resamples=np.inf, vectorized=True)  # fmt: skip
    assert comparison.sign_flip_p() == pytest.approx(expected.pvalue)


def fake_run(
    path: Path,
    conv: str,
    seed: int,
    growth_rate: int,
    accuracy: float,
    macs: float,
    fit_s: float,
    fingerprint: str | None = FINGERPRINT,
    labels: np.ndarray | None = None,
    source: str = "Synthetic",
    extra: dict | None = None,
    config: dict | None = None,
) -> Run:
    """A run directory as training leaves it, with predictions that give ``accuracy`` on 2,000 images.

    ``fingerprint`` None: the test predictions of a run saved before fingerprints were recorded.
    ``extra``: more keys for its metrics.json; ``config``: more settings for its config (merged in).
    """
    path.mkdir(parents=True)
    (path / CONFIG_FILE).parent.mkdir()
    saved = OmegaConf.create({"seed": seed, "model": {"conv": conv, "growth_rate": growth_rate, "block_config": [2, 2]},
                              "data": {"source": {"_target_": f"sepdense.data.{source}"}}})  # fmt: skip
    OmegaConf.save(OmegaConf.merge(saved, config or {}), path / CONFIG_FILE)
    labels = np.arange(2000) % 10 if labels is None else labels
    rng = np.random.default_rng(seed * 100 + growth_rate + (conv == "separable"))
    right = rng.permutation(2000) < round(accuracy * 2000)
    preds = np.where(right, labels, (labels + 1) % 10)
    data = {} if fingerprint is None else {"data_source": f"{source}(seed={seed})", "test_fingerprint": fingerprint}
    write_predictions(path, {"index": np.arange(2000), "label": labels, "logits": np.eye(10)[preds], **data},
                      [f"c{i}" for i in range(10)])  # fmt: skip
    # The validation score that chose the checkpoint: the test accuracy unless ``extra`` says otherwise.
    metrics = {"test/acc": float(right.mean()), "val/acc_best": float(right.mean()), "model/macs": macs,
               "time/fit_s": fit_s, "model/params": macs / 300, **(extra or {})}  # fmt: skip
    (path / METRICS_FILE).write_text(json.dumps(metrics))
    return load_run(path)


def test_a_seed_without_a_partner_is_left_out_with_the_reason(tmp_path: Path) -> None:
    baseline = [fake_run(tmp_path / "s0", "standard", 0, 12, 0.8, 3e8, 100)]
    others = [fake_run(tmp_path / f"p{seed}", "separable", seed, 12, 0.8, 2e8, 90) for seed in (0, 1)]
    comparison, problems = compare(baseline, others)
    assert [p.seed for p in comparison.pairs] == [0]
    assert len(problems) == 1 and re.search(r"p1 \(seed 1\): no standard run with the same seed .* seed=1", problems[0])


def test_only_runs_tested_on_the_same_images_and_labels_are_paired(tmp_path: Path) -> None:
    baseline = [fake_run(tmp_path / f"s{seed}", "standard", seed, 12, 0.8, 3e8, 100) for seed in range(3)]
    shifted = np.roll(np.arange(2000) % 10, 1)
    others = [
        fake_run(tmp_path / "p0", "separable", 0, 12, 0.8, 2e8, 90),
        fake_run(tmp_path / "p1", "separable", 1, 12, 0.8, 2e8, 90, fingerprint="cd" * 20, source="ImageFolder"),
        fake_run(tmp_path / "p2", "separable", 2, 12, 0.8, 2e8, 90, fingerprint=None, labels=shifted),
    ]
    comparison, problems = compare(baseline, others)
    assert [p.seed for p in comparison.pairs] == [0]
    assert "p1 and s1 are not comparable: they were tested on different data (ImageFolder(seed=1), test split sha1 " \
           "cdcdcdcdcdcd; Synthetic(seed=1), test split sha1 abababababab)" in problems[0]  # fmt: skip
    assert "p2 and s2 are not comparable: 2,000 of their 2,000 test images have different labels" in problems[1]
    assert "fingerprint unknown" in problems[1]


def test_runs_saved_before_fingerprints_still_pair_and_say_so(tmp_path: Path) -> None:
    baseline = [fake_run(tmp_path / "s0", "standard", 0, 12, 0.8, 3e8, 100, fingerprint=None)]
    others = [fake_run(tmp_path / "p0", "separable", 0, 12, 0.75, 2e8, 90)]
    comparison, problems = compare(baseline, others)
    assert not problems and comparison.pairs[0].test_fingerprint is None
    assert "Test-split fingerprint unknown for 1 of the 1 pair(s)" in describe(comparison)


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
                     0.62 + 0.005 * seed + 0.05 * np.log(macs / 2e8), macs / 2, macs / 1e6)  # fmt: skip
    summary = json.loads((write_report(sweep) / "summary.json").read_text())
    assert "At equal MACs" in summary["findings"] and "separable is ahead of standard by" in summary["findings"]
    assert "At equal fit time" in summary["findings"]
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


def test_equal_cost_compares_the_pareto_fronts_only(tmp_path: Path) -> None:
    # Standard's middle width is dominated (dearer than the narrow one, less accurate): off its front. The
    # fronts are 2 points apart at every cost; with the dominated setting interpolated in, separable would
    # look ahead around 2e8 MACs.
    def point(conv: str, name: str, growth_rate: int, accuracy: float, macs: float) -> Point:
        return Point(conv, name, [fake_run(tmp_path / name, conv, 0, growth_rate, accuracy, macs, 1.0)])

    standard = [point("standard", "a", 6, 0.70, 1e8), point("standard", "b", 12, 0.60, 2e8),
                point("standard", "c", 24, 0.80, 4e8)]  # fmt: skip
    separable = [point("separable", "d", 6, 0.68, 1e8), point("separable", "e", 24, 0.78, 4e8)]
    sentence = ahead_at_equal_cost(separable, standard, "model/macs")
    assert sentence == ("At equal MACs (100M to 400M; the two Pareto fronts, chosen on validation accuracy, in test "
                        "accuracy interpolated between their settings): separable is behind standard by 2.00 to 2.00 "
                        "points.")  # fmt: skip


def test_a_report_keeps_runs_on_different_data_apart(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    fake_run(sweep / "standard_cifar", "standard", 0, 12, 0.80, 3e8, 100, source="OfficialCIFAR10")
    fake_run(sweep / "separable_jpeg", "separable", 0, 12, 0.78, 2e8, 90, fingerprint="cd" * 20, source="ImageFolder")
    summary = json.loads((write_report(sweep) / "summary.json").read_text())
    assert summary["significance"] == []
    assert summary["unpaired"] == ["no standard run at data=ImageFolder to compare separable with."]
    assert set(summary["by_conv"]) == {"standard (data=OfficialCIFAR10)", "separable (data=ImageFolder)"}


def test_runs_with_different_recipes_are_never_pooled_as_seeds(tmp_path: Path) -> None:
    # Seeds 0 and 1 at lr 0.1 for 100 epochs, seed 2 at lr 0.01 for 10: two recipes, whatever the seeds say. Paths,
    # loggers, the progress bar and settings that follow the seed differ too, and must not split anything.
    sweep = tmp_path / "sweep"
    for conv, seed in itertools.product(("standard", "separable"), range(3)):
        recipe = {"optimizer": {"lr": 0.1 if seed < 2 else 0.01}, "trainer": {"max_epochs": 100 if seed < 2 else 10}}
        noise = {"paths": {"log_dir": f"/tmp/{conv}{seed}"}, "logger": {"csv": {"version": seed}} if seed else {},
                 "callbacks": {"progress_bar": None if seed else {"_target_": "x"}},
                 "data": {"shuffle_seed": "${seed}"}}  # fmt: skip
        fake_run(sweep / f"{conv}_s{seed}", conv, seed, 12, 0.8 + 0.01 * seed, 3e8, 100.0,
                 config={**recipe, **noise})  # fmt: skip
    summary = json.loads((write_report(sweep) / "summary.json").read_text())
    assert summary["differing_settings"] == "optimizer.lr (0.01, 0.1), trainer.max_epochs (10, 100)"
    cells = {row["conv"]: [] for row in summary["headline"]}
    for row in summary["headline"]:
        cells[row["conv"]].append((row["setting"], row["seeds"]))
    assert (
        cells["standard"]
        == cells["separable"]
        == [
            ("optimizer.lr=0.01, trainer.max_epochs=10", "1 (seed 2)"),
            ("optimizer.lr=0.1, trainer.max_epochs=100", "2 (0, 1)"),
        ]
    )
    # Each recipe paired with itself: seed 2 alone, seeds 0 and 1 together.
    assert sorted(len(c["pairs"]) for c in summary["significance"]) == [1, 2]
    markdown = (sweep / "report" / "report.md").read_text()
    assert "These runs differ in optimizer.lr (0.01, 0.1), trainer.max_epochs (10, 100)" in markdown


def test_fronts_are_chosen_on_validation_and_reported_on_test(tmp_path: Path) -> None:
    # Standard's middle width scores best on validation for its cost but worst on test: chosen on validation it is
    # on the front (and its test accuracy is what is reported); chosen on test it would have been dropped.
    def point(conv: str, name: str, growth_rate: int, val: float, test: float, macs: float) -> Point:
        run = fake_run(tmp_path / name, conv, 0, growth_rate, test, macs, 1.0, extra={"val/acc_best": val})
        return Point(conv, name, [run])

    standard = [point("standard", "a", 6, 0.70, 0.70, 1e8), point("standard", "b", 12, 0.75, 0.60, 2e8),
                point("standard", "c", 24, 0.80, 0.80, 4e8)]  # fmt: skip
    separable = [point("separable", "d", 6, 0.68, 0.68, 1e8), point("separable", "e", 24, 0.78, 0.78, 4e8)]
    assert [p.setting for p in pareto_front(standard, "model/macs")] == ["a", "b", "c"]
    sentence = ahead_at_equal_cost(separable, standard, "model/macs")
    # Test accuracy of the validation-chosen fronts, interpolated in log(MACs) at 1, 1.41, 2, 2.83 and 4 × 1e8.
    grid = np.linspace(np.log(1e8), np.log(4e8), 5)
    gaps = 100 * (np.interp(grid, np.log([1e8, 4e8]), [0.68, 0.78]) - np.interp(grid, np.log([1e8, 2e8, 4e8]),
                                                                               [0.70, 0.60, 0.80]))  # fmt: skip
    assert sentence.endswith(f"neither is ahead throughout (separable − standard: {gaps.min():+.2f} to "
                             f"{gaps.max():+.2f} points).")  # fmt: skip
    assert (gaps.min(), gaps.max()) == pytest.approx((-2, 13))
    # Without a validation score a setting is on no front: the test set never chooses.
    blind = Point("standard", "f", [fake_run(tmp_path / "f", "standard", 0, 6, 0.9, 1e8, 1.0)])
    blind.runs[0].metrics.pop("val/acc_best")
    assert pareto_front([blind], "model/macs") == []


def test_holm_adjusts_step_down() -> None:
    # Sorted: 0.005 × 4 = 0.02, 0.01 × 3 = 0.03, 0.03 × 2 = 0.06, 0.04 × 1 = 0.04 → raised to 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([0.02]) == [0.02]


def test_several_comparisons_are_decided_by_holm_adjusted_p(tmp_path: Path) -> None:
    # Three widths, one seed each: separable 3, 3.5 and 2.5 points ahead of standard on 2,000 test images
    # (McNemar p 0.042, 0.015 and 0.087 with these predictions; Holm: 0.044, 0.084, 0.087).
    sweep = tmp_path / "sweep"
    for growth_rate, gain in ((6, 0.03), (12, 0.035), (24, 0.025)):
        fake_run(sweep / f"standard_k{growth_rate}", "standard", 0, growth_rate, 0.70, 1e8 * growth_rate, 10.0)
        fake_run(sweep / f"separable_k{growth_rate}", "separable", 0, growth_rate, 0.70 + gain, 5e7 * growth_rate,
                 10.0)  # fmt: skip
    summary = json.loads((write_report(sweep) / "summary.json").read_text())
    tests = summary["significance"]
    raw = [c["p_value"] for c in tests]
    assert [c["holm_adjusted_p"] for c in tests] == pytest.approx(holm(raw))
    assert all(c["comparisons_in_report"] == 3 for c in tests)
    assert [c["significant"] for c in tests] == [p < 0.05 for p in holm(raw)]
    # The case Holm is for: significant alone, not among three.
    assert any(p < 0.05 <= adjusted for p, adjusted in zip(raw, holm(raw), strict=True)), raw
    markdown = (sweep / "report" / "report.md").read_text()
    assert "3 comparisons in this report: each verdict uses its Holm-adjusted p (Holm's step-down procedure" in markdown
    assert "Holm-adjusted over the report's 3 comparisons p = " in markdown
    one = comparison_of([30])  # one comparison: nothing to adjust
    adjust_by_holm([one])
    assert one.adjusted_p is None and "Holm" not in describe(one)
