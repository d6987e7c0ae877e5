"""The published result (results/comparison_cpu/): every run complete at 100 epochs, and the numbers the report
and the README quote are the ones its saved test predictions give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

RESULTS = Path(__file__).parents[1] / "results" / "comparison_cpu"
EPOCHS = 100
QUALITY = ("acc", "precision", "recall", "f1")


def scores(predictions: Path) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 recomputed from a run's saved test predictions."""
    saved = np.load(predictions, allow_pickle=False)
    label, pred, classes = saved["label"], saved["pred"], len(saved["class_names"])
    tp = np.array([np.sum((pred == c) & (label == c)) for c in range(classes)], dtype=float)
    predicted = np.bincount(pred, minlength=classes).astype(float)
    actual = np.bincount(label, minlength=classes).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = tp / actual
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return {"acc": float(np.mean(pred == label)), "precision": float(precision.mean()),
            "recall": float(recall.mean()), "f1": float(f1.mean()), "images": len(label)}  # fmt: skip


def check_published(folder: Path, epochs: int, seeds: set[int]) -> None:
    """Every run in ``folder`` complete at ``epochs``, each conv type with ``seeds``, and the report's per-run and
    per-conv-type numbers (summary.json, report.md's headline) equal to what the predictions give."""
    runs = sorted(p.parent for p in folder.glob("*/metrics.json"))
    assert runs, f"no runs in {folder}"
    by_conv: dict[str, dict[int, dict[str, float]]] = {}
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        assert metrics["complete"] is True and metrics["epochs_done"] == metrics["epochs_planned"] == epochs, run
        assert config["trainer"]["max_epochs"] == epochs and (run / "environment.json").is_file()
        recomputed = scores(run / "test_predictions.npz")
        for name in QUALITY:
            assert metrics[f"test/{name}"] == pytest.approx(recomputed[name], abs=1e-6), (run.name, name)
        confusion = json.loads((run / "confusion_matrix.json").read_text())["matrix"]
        assert sum(map(sum, confusion)) == recomputed["images"]
        by_conv.setdefault(config["model"]["conv"], {})[config["seed"]] = recomputed
    assert set(by_conv) == {"standard", "separable"} and all(set(s) == seeds for s in by_conv.values())
    summary = json.loads((folder / "report" / "summary.json").read_text())
    report = (folder / "report" / "report.md").read_text()
    assert summary["complete"] == len(runs)
    for conv, per_seed in by_conv.items():
        for name in QUALITY:
            values = [s[name] for s in per_seed.values()]
            mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
            saved = summary["by_conv"][conv][f"test/{name}"]
            assert saved["mean"] == pytest.approx(mean, abs=1e-6) and saved["std"] == pytest.approx(std, abs=1e-6)
            assert f"{100 * mean:.2f} ± {100 * std:.2f}" in report, (conv, name)
    assert summary.get("not_started") == [], "the published sweep planned jobs that never ran"


def readme_rows(readme: str, conv: str) -> list[str]:
    """The README's table rows that lead with ``conv`` (plain or bold)."""
    return [line for line in readme.splitlines() if line.startswith((f"| {conv} |", f"| **{conv}** |"))]


def check_readme(readme: str, summary: dict) -> None:
    """The README's headline quotes the published report: a row per conv type with its accuracy and macro
    precision / recall / F1 over seeds exactly as the report's summary gives them."""
    for conv, stats in summary["by_conv"].items():
        quoted = [f"{100 * stats[f'test/{n}']['mean']:.2f} ± {100 * stats[f'test/{n}']['std']:.2f}" for n in QUALITY]
        rows = readme_rows(readme, conv)
        assert any(all(q in row for q in quoted) for row in rows), f"README has no {conv} row quoting {quoted}"


@pytest.mark.skipif(not RESULTS.is_dir(), reason="results/comparison_cpu/ is published when the study is complete")
def test_the_published_comparison_is_complete_and_its_numbers_are_its_predictions() -> None:
    check_published(RESULTS, EPOCHS, {0, 1, 2})
    readme = (RESULTS.parents[1] / "README.md").read_text()
    check_readme(readme, json.loads((RESULTS / "report" / "summary.json").read_text()))


def test_the_readme_check_finds_a_number_the_report_does_not_give() -> None:
    summary = {"by_conv": {"standard": {f"test/{n}": {"mean": 0.85 + i / 100, "std": 0.0041}
                                        for i, n in enumerate(QUALITY)}}}  # fmt: skip
    row = "| standard | 85.00 ± 0.41 | 86.00 ± 0.41 | 87.00 ± 0.41 | 88.00 ± 0.41 | 59,218 |"
    check_readme(f"intro\n\n| conv | a | b | c | d | params |\n| --- |\n{row}\n", summary)
    with pytest.raises(AssertionError, match="README has no standard row"):
        check_readme(row.replace("88.00", "88.01"), summary)
    with pytest.raises(AssertionError, match="README has no standard row"):
        check_readme(row.replace("| standard |", "| separable |"), summary)


def fake_run(root: Path, conv: str, seed: int, complete: bool = True) -> Path:
    run = root / f"model.conv={conv},seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": {"conv": conv}, "seed": seed}))
    (run / "metrics.json").write_text(json.dumps({"complete": complete, "epochs_done": 1, "epochs_planned": 2}))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    return run


def test_publishing_copies_complete_runs_without_checkpoints_and_refuses_unfinished_ones(tmp_path: Path) -> None:
    from sepdense.report.publish import publish

    sweep = tmp_path / "sweep"
    fake_run(sweep, "standard", 0)
    fake_run(sweep, "separable", 0, complete=False)
    with pytest.raises(ValueError, match=r"not every run is complete, so nothing was published: .*separable"):
        publish(sweep, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (sweep / "model.conv=separable,seed=0" / "metrics.json").write_text(json.dumps({"complete": True}))
    published = publish(sweep, tmp_path / "out")
    assert sorted(p.name for p in published) == ["separable-seed0", "standard-seed0"]
    assert (tmp_path / "out" / "standard-seed0" / ".hydra" / "config.yaml").is_file()
    assert not list((tmp_path / "out").rglob("*.ckpt"))
    with pytest.raises(ValueError, match="already holds published runs"):
        publish(sweep, tmp_path / "out")


def test_publishing_refuses_a_sweep_whose_planned_jobs_have_not_all_started(tmp_path: Path) -> None:
    from sepdense.report.publish import publish

    sweep = tmp_path / "sweep"
    for conv in ("standard", "separable"):
        run = fake_run(sweep, conv, 0)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.conv={conv}", "seed=0"]))
    plan = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                  "params": {"model.conv": "standard,separable", "seed": "0,1"}},
                      "overrides": {"task": ["experiment=comparison_cpu"]}}}  # fmt: skip
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(plan))
    with pytest.raises(ValueError, match=r"model.conv=standard,seed=1 \(not started\); model.conv=separable,seed=1"):
        publish(sweep, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    for conv in ("standard", "separable"):
        run = fake_run(sweep, conv, 1)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.conv={conv}", "seed=1"]))
    assert len(publish(sweep, tmp_path / "out")) == 4
    # The plan goes with the runs: the published folder's report counts the same jobs.
    assert yaml.safe_load((tmp_path / "out" / "multirun.yaml").read_text()) == plan
