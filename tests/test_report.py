"""The report of a real (tiny) sweep: files, numbers equal to what the runs logged, broken runs tolerated."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sepdense.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sweep(smoke_sweep: Path) -> Path:
    """Two conv types × two seeds, 2 epochs of a few batches of random data, through the real entry point."""
    return smoke_sweep


def logged_test_acc(run_dir: Path) -> float:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return events.Scalars("test/acc")[-1].value


@pytest.mark.slow
def test_multirun_ends_with_a_report(sweep: Path) -> None:
    report = sweep / "report"
    for name in ("report.md", "summary.csv", "summary.json", "curves_by_conv.png", "tradeoff.png",
                 "confusion_standard.png", "confusion_separable.png"):  # fmt: skip
        assert (report / name).is_file(), name
    for png in [*report.glob("*.png"), *report.glob("curves/*.png")]:
        assert png.read_bytes()[:8] == PNG, png
    assert len(list((report / "curves").glob("*.png"))) == 4  # one per run

    summary = json.loads((report / "summary.json").read_text())
    assert {r["conv"] for r in summary["runs"]} == {"separable", "standard"}
    assert all(r["status"] == "complete" for r in summary["runs"])
    for row in summary["runs"]:  # the numbers are what each run logged, read independently here
        assert row["test/acc"] == pytest.approx(logged_test_acc(sweep / row["run"]), abs=1e-6)
    for conv in ("separable", "standard"):
        accs = [r["test/acc"] for r in summary["runs"] if r["conv"] == conv]
        stats = summary["by_conv"][conv]["test/acc"]
        assert stats["n"] == 2 and stats["mean"] == pytest.approx(sum(accs) / 2)
    markdown = (report / "report.md").read_text()
    assert "Separable compared with standard convolutions" in markdown
    # Paired by seed on the same test images: the significance line, in words, with the seed count.
    line = (r"separable vs standard: [+-][\d.]+ (± [\d.]+ points over|points in each of) 2 seeds .*(not )?"
            r"significant at 5% over 2 seeds\. McNemar's p per seed: [\d.e-]+, [\d.e-]+\.")  # fmt: skip
    assert re.search(line, markdown)
    assert len(summary["significance"]) == 1 and len(summary["significance"][0]["pairs"]) == 2
    assert summary["unpaired"] == [] and "fingerprint unknown" not in markdown
    for pair in summary["significance"][0]["pairs"]:  # each pair on one test split, as its runs saved it
        runs = [sweep / r["run"] for r in summary["runs"] if r["seed"] == pair["seed"]]
        saved = {str(np.load(run / "test_predictions.npz", allow_pickle=False)["test_fingerprint"]) for run in runs}
        assert len(runs) == 2 and saved == {pair["test_fingerprint"]}
    assert "Accuracy against cost, with each conv type's Pareto front" in markdown
    assert f"{100 * summary['by_conv']['separable']['test/acc']['mean']:.2f}" in markdown
    with open(report / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


@pytest.mark.slow
def test_broken_and_unfinished_runs_are_listed_not_fatal(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report", "*.ckpt"))
    runs = sorted(p for p in copy.iterdir() if (p / ".hydra").is_dir())
    (runs[0] / "metrics.json").unlink()  # crashed or still running
    (runs[1] / "metrics.json").write_text("{ not json")  # corrupt
    assert all("separable" in r.name for r in runs[:2])  # so only standard runs remain complete
    out = write_report(copy)
    summary = json.loads((out / "summary.json").read_text())
    statuses = {r["run"]: r["status"] for r in summary["runs"]}
    assert statuses[runs[0].name].startswith("incomplete") and statuses[runs[1].name].startswith("broken")
    markdown = (out / "report.md").read_text()
    assert "Only standard runs completed, so there is no comparison yet" in markdown
    assert summary["by_conv"]["standard"]["test/acc"]["n"] == 2 and "separable" not in summary["by_conv"]


@pytest.mark.slow
def test_report_cli_on_an_existing_directory(sweep: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "sepdense.report", str(sweep)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "## Findings" in result.stdout and f"Report written to {sweep / 'report'}" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "sepdense.report", str(sweep / "nope")], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 1 and "is not a directory" in missing.stderr
