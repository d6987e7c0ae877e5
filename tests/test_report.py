"""Reports of sweeps and runs: a real (tiny) sweep, a comparison part-way through (run directories made on disk),
and what a reader of a run's log trips over."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
from conftest import CONF_DIR, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from pytorch_lightning.demos.boring_classes import BoringModel
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_significance import fake_run
from torch.utils.tensorboard import SummaryWriter

from sepdense.callbacks.epoch_log import estimate_line
from sepdense.cli import quiet_libraries
from sepdense.report import ReportCallback, write_report
from sepdense.runs import CONFIG_FILE, METRICS_FILE, Run, load_run

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
    assert "## Findings" in result.stdout
    assert f"4 of 4 runs complete. Report written to {sweep / 'report'}" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "sepdense.report", str(sweep / "nope")], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 1 and "is not a directory" in missing.stderr


def write_curves(run_dir: Path, epochs: int) -> None:
    """Per-epoch curves as Lightning logs them: each metric beside ``epoch`` at the same step."""
    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        for epoch in range(epochs):
            for tag, value in (("epoch", epoch), ("train/loss", 2 - epoch / 10), ("val/loss", 2.1 - epoch / 10),
                               ("train/acc", 0.3 + epoch / 20), ("val/acc", 0.28 + epoch / 20)):  # fmt: skip
                writer.add_scalar(tag, value, 10 * (epoch + 1))


DONE = {"complete": True, "epochs_done": 100, "epochs_planned": 100, "stopped_by": "max_epochs"}


def comparison_part_way(root: Path) -> dict[str, dict[int, float]]:
    """``experiment=comparison`` part-way through: both conv types × seeds 0, 1, 2 complete, a separable seed-3 job
    stopped by the time limit (its test accuracy beats every complete run), a standard seed-3 job killed before
    it wrote metrics.json. Returns the complete runs' test accuracies by conv type and seed."""
    accuracies: dict[str, dict[int, float]] = {"standard": {}, "separable": {}}
    for conv, seed in itertools.product(accuracies, range(3)):
        accuracy = 0.80 + 0.01 * seed if conv == "standard" else 0.78 + 0.013 * seed
        extra = {"test/precision": accuracy - 0.01, "test/recall": accuracy, "test/f1": accuracy - 0.02,
                 "memory/peak_mb": 900.0 + 100 * (conv == "separable"), "model/latency_b1_ms": 5.0, **DONE}  # fmt: skip
        macs = 3e8 if conv == "standard" else 2e8
        run = fake_run(root / f"{conv}_s{seed}", conv, seed, 12, accuracy, macs, 600.0 + seed, extra=extra)
        accuracies[conv][seed] = run.metrics["test/acc"]
    write_curves(root / "separable_s0", 3)
    cut = {"complete": False, "epochs_done": 3, "epochs_planned": 100, "stopped_by": "time_limit"}
    fake_run(root / "separable_s3", "separable", 3, 12, 0.99, 2e8, 30.0, extra=cut)
    write_curves(root / "separable_s3", 3)
    killed = root / "standard_s3"
    fake_run(killed, "standard", 3, 12, 0.99, 3e8, 20.0)
    (killed / METRICS_FILE).unlink()
    OmegaConf.save({**OmegaConf.load(killed / CONFIG_FILE), "trainer": {"max_epochs": 100}}, killed / CONFIG_FILE)
    write_curves(killed, 2)
    return accuracies


def test_a_comparison_part_way_reports_only_its_complete_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    accuracies = comparison_part_way(sweep)
    # As at the end of `python train.py -m experiment=comparison`: the report, then the sweep's table.
    ReportCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    printed = capsys.readouterr().out
    summary = json.loads((sweep / "report" / "summary.json").read_text())
    markdown = (sweep / "report" / "report.md").read_text()

    assert summary["complete"] == 6 and len(summary["runs"]) == 8 and "**6 of 8 runs complete.**" in markdown
    assert "- separable_s3: in progress (3/100 epochs done; stopped by time_limit)" in markdown
    assert re.search(r"- standard_s3: incomplete \(no metrics.json[^)]*\), 2/100 epochs", markdown)
    # Neither unfinished run enters a number, a test or a front: six runs, three seeds each, paired 0, 1, 2.
    assert {conv: s["test/acc"]["n"] for conv, s in summary["by_conv"].items()} == {"standard": 3, "separable": 3}
    assert [p["seed"] for p in summary["significance"][0]["pairs"]] == [0, 1, 2] and summary["unpaired"] == []

    # One headline table, first: per conv type the seeds, metrics over seeds, paired tests and cost.
    assert markdown.count("## Headline") == 1 and markdown.index("## Headline") < markdown.index("## Findings")
    standard, separable = summary["headline"]
    assert (standard["conv"], separable["conv"]) == ("standard", "separable") and separable["seeds"] == "0, 1, 2"
    accs = 100 * np.array([accuracies["separable"][s] for s in range(3)])
    assert separable["test acc (%)"] == f"{accs.mean():.2f} ± {accs.std(ddof=1):.2f}"
    assert separable["test f1 (%)"] == f"{accs.mean() - 2:.2f} ± {accs.std(ddof=1):.2f}"
    diffs = accs - 100 * np.array([accuracies["standard"][s] for s in range(3)])
    assert separable["vs baseline (points)"] == f"{diffs.mean():+.2f} ± {diffs.std(ddof=1):.2f}"
    t_test = stats.ttest_rel(accs, accs - diffs)
    interval = t_test.confidence_interval(0.95)
    assert separable["over seeds: paired t 95% (points)"] == (f"{interval.low:+.2f} to {interval.high:+.2f}, "
                                                              f"p = {t_test.pvalue:.3g}")  # fmt: skip
    assert len(separable["McNemar p per seed"].split(", ")) == 3 and standard["McNemar p per seed"] == "(baseline)"
    assert separable["parameters (M)"] == f"{2e8 / 300 * 1e-6:.3f}" and separable["peak memory (MB)"] == "1,000"
    assert separable["training time (min)"] == f"{601 / 60:.1f} ± {1 / 60:.1f}"
    headline = markdown[markdown.index("## Headline") : markdown.index("## Findings")]
    assert headline.count("| separable |") == 1 and headline.count("| standard |") == 1

    # The significance sentence stands once, under its heading; the findings give its verdict.
    assert markdown.count("McNemar's p per seed") == 1
    assert markdown.index("McNemar's p per seed") > markdown.index("## Is the difference real?")
    assert "separable vs standard: significant at 5% over 3 seeds (paired t-test over seeds" in summary["findings"]
    # The curves of every run, the unfinished ones marked, then the trade-off.
    assert "![separable_s3, in progress (3/100 epochs done; stopped by time_limit)]" in markdown
    listed = "| separable_s3 | separable | 3 | 3/100 epochs | in progress (3/100 epochs done; stopped by time_limit) |"
    assert f"{listed} - |" in markdown  # its test accuracy is not shown as a result
    for name in ("separable_s0", "separable_s3", "standard_s3"):
        assert (sweep / "report" / "curves" / f"{name}.png").read_bytes()[:8] == PNG
    assert markdown.index("## Learning curves") < markdown.index("## Accuracy against cost")

    # The sweep's last words: each run's result or how far it got, and where everything is.
    assert "[sepdense] sweep: 6 of 8 runs complete" in printed
    assert f"| separable_s1 | {100 * accuracies['separable'][1]:.3g} | {100 * accuracies['separable'][1] - 2:.3g} |" \
        in printed  # fmt: skip
    assert "| separable_s3 | in progress 3/100 epochs | in progress 3/100 epochs |" in printed
    assert "| standard_s3 | incomplete 2/100 epochs |" in printed
    assert f"sweep directory: {sweep}\nreport: {sweep / 'report' / 'report.md'}" in printed


def test_a_run_is_complete_when_it_ran_its_epochs_stopped_early_or_predates_the_flag(tmp_path: Path) -> None:
    def run(name: str, **metrics: object) -> Run:
        return fake_run(tmp_path / name, "standard", 0, 12, 0.8, 3e8, 10.0, extra=metrics)

    assert run("done", **DONE).status == "complete"
    early = run("early", complete=True, epochs_done=37, epochs_planned=100, stopped_by="early_stopping")
    assert early.complete and early.status == "complete (early stopping after 37/100 epochs: complete by its own rule)"
    old = run("old")  # saved before `complete` was recorded
    assert old.complete and old.progress == ""
    signal = run("signal", complete=False, epochs_done=1, epochs_planned=2, stopped_by="signal")
    assert not signal.complete and signal.status == "in progress (1/2 epochs done; stopped by signal)"
    assert not load_run(tmp_path / "signal").complete
    (tmp_path / "early" / METRICS_FILE).write_text("[1, 2]")  # not the object training writes
    assert load_run(tmp_path / "early").status.startswith("broken")
    sweep = tmp_path / "sweep"
    for name, metrics in (("a", DONE), ("b", {"complete": True, "epochs_done": 9, "epochs_planned": 100,
                                              "stopped_by": "early_stopping"})):  # fmt: skip
        fake_run(sweep / name, "standard", ord(name), 12, 0.8, 3e8, 10.0, extra=metrics)
    markdown = (write_report(sweep) / "report.md").read_text()
    assert "**2 of 2 runs complete.**" in markdown
    assert "Stopped by early stopping, complete by its own rule: b." in markdown


def test_experiment_comparison_sweeps_both_conv_types_over_three_seeds_of_the_default_recipe() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        default = compose(config_name="train")
        cfg = compose(config_name="train", overrides=["experiment=comparison"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweeps = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    jobs = set(itertools.product(*([(o.key_or_group, v) for v in o.sweep_iterator()] for o in sweeps)))
    assert jobs == {(("model.conv", conv), ("seed", seed)) for conv in ("standard", "separable") for seed in (0, 1, 2)}
    assert cfg.trainer.max_epochs == 100
    del cfg.hydra
    assert cfg == default  # the default recipe: the experiment sets nothing else


def test_the_estimate_line_counts_steps_and_epochs_left() -> None:
    assert "for 1 more step (the rest of epoch 2 of 2) at" in estimate_line(0.5, 1, 1, 2)
    line = estimate_line(5.59, 35_100, 0, 100)
    assert line.startswith("Estimated training time: 54 h 30 min for 35,100 more steps (the rest of epoch 1 and "
                           "epochs 2–100 of 100) at 5.59 s per step")  # fmt: skip
    assert "(the rest of epoch 1 and epoch 2 of 2)" in estimate_line(1.0, 5, 0, 2)


def fit_with_short_epochs(log_dir: Path, quiet: bool) -> list[str]:
    """The warnings of a fit whose epochs (3 batches) are shorter than the logging interval (50 steps)."""
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, log_every_n_steps=50,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         logger=pl.loggers.CSVLogger(log_dir))  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if quiet:
            quiet_libraries()  # as every entry point does before training
        trainer.fit(BoringModel())
    return [str(w.message) for w in caught]


def test_short_epochs_do_not_warn_about_the_logging_interval(tmp_path: Path) -> None:
    interval = "is smaller than the logging interval"
    assert any(interval in m for m in fit_with_short_epochs(tmp_path, quiet=False))  # Lightning alone warns
    assert not any(interval in m for m in fit_with_short_epochs(tmp_path, quiet=True))
