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

import matplotlib.pyplot as plt
import numpy as np
import pytest
import pytorch_lightning as pl
import yaml
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

from sepdense.bench.plots import layer_gap_figure
from sepdense.callbacks.epoch_log import estimate_line, memory_line
from sepdense.cli import quiet_libraries
from sepdense.report import ReportCallback, write_report
from sepdense.report.figures import plot_tradeoff
from sepdense.report.measured import settle_costs
from sepdense.report.tradeoff import Point
from sepdense.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    OVERRIDES_FILE,
    Run,
    find_run_dirs,
    load_run,
    planned_jobs,
    unstarted_jobs,
)

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
    assert (standard["conv"], separable["conv"]) == ("standard", "separable") and separable["seeds"] == "3 (0, 1, 2)"
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
    assert separable["parameters (M)"] == f"{2e8 / 300 * 1e-6:.3f}"
    assert separable["process peak resident memory during fit, CPU (MB)"] == "1,000"
    assert separable["fit time, all epochs with validation (min)"] == f"{601 / 60:.1f} ± {1 / 60:.1f}"
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


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def save_sweep_plan(sweep: Path, params: dict[str, str], task: list[str], sweeper: str = BASIC_SWEEPER) -> None:
    """The part of the multirun.yaml Hydra saves in a sweep's directory that says which jobs it plans."""
    sweep.mkdir(parents=True, exist_ok=True)
    plan = {"hydra": {"sweeper": {"_target_": sweeper, "params": params}, "overrides": {"task": task}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(plan))


def test_a_sweep_stopped_before_some_jobs_started_counts_and_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep = tmp_path / "sweep"
    comparison_part_way(sweep)  # both conv types × seeds 0-3 have run directories
    for run_dir in find_run_dirs(sweep):
        run = load_run(run_dir)
        (run_dir / OVERRIDES_FILE).write_text(yaml.safe_dump([f"model.conv={run.conv}", f"seed={run.seed}",
                                                              "experiment=comparison"]))  # fmt: skip
    # Seeds 0-4 planned: the time limit came before joblib started either seed-4 job.
    save_sweep_plan(sweep, {"model.conv": "standard,separable", "seed": "0,1"},
                    ["experiment=comparison", "seed=range(0,5)", "time_limit=00:01:00:00"])  # fmt: skip
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "time_limit": "00:01:00:00"})
    with pytest.raises(SystemExit) as ended:
        ReportCallback().on_multirun_end(config)
    assert ended.value.code == 124
    printed = capsys.readouterr()
    assert "[sepdense] sweep: 6 of 10 runs complete (2 not started)" in printed.out
    assert "4 run(s) not finished (separable_s3, standard_s3, model.conv=standard,seed=4, model.conv=separable," \
           "seed=4)" in printed.err  # fmt: skip
    markdown = (sweep / "report" / "report.md").read_text()
    assert "**6 of 10 runs complete (2 not started).**" in markdown
    assert "- model.conv=standard,seed=4: not started\n- model.conv=separable,seed=4: not started" in markdown
    summary = json.loads((sweep / "report" / "summary.json").read_text())
    assert summary["not_started"] == ["model.conv=standard,seed=4", "model.conv=separable,seed=4"]
    assert {conv: s["test/acc"]["n"] for conv, s in summary["by_conv"].items()} == {"standard": 3, "separable": 3}

    # The plan as Hydra's basic sweeper reads it: the command line's value of a key wins over the sweeper's params.
    save_sweep_plan(sweep, {"model.conv": "standard,separable", "seed": "0,1"}, ["seed=3"])
    assert planned_jobs(sweep) == [("model.conv=standard",), ("model.conv=separable",)] and unstarted_jobs(sweep) == []
    # Where the plan cannot be told, nothing is counted as not started: another sweeper, a sweep only the config
    # can list, a run without its overrides.
    save_sweep_plan(sweep, {"seed": "0,1"}, [], sweeper="hydra_plugins.hydra_optuna_sweeper.OptunaSweeper")
    assert planned_jobs(sweep) is None
    save_sweep_plan(sweep, {}, ["model=glob(*)"])
    assert planned_jobs(sweep) is None
    save_sweep_plan(sweep, {}, ["a=range(0,300)", "b=range(0,300)", "c=range(0,1000000000)"])
    assert planned_jobs(sweep) is None  # a few bytes asking for millions of jobs: not listed
    save_sweep_plan(sweep, {"seed": "0,1,2,3,4,5"}, [])
    assert unstarted_jobs(sweep) == ["seed=4", "seed=5"]
    (tmp_path / "elsewhere.yaml").write_text((sweep / "multirun.yaml").read_text())
    (sweep / "multirun.yaml").unlink()
    (sweep / "multirun.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    assert planned_jobs(sweep) is None  # a link is not followed
    (sweep / "multirun.yaml").unlink()
    (sweep / "multirun.yaml").write_text((tmp_path / "elsewhere.yaml").read_text())
    (sweep / "standard_s0" / OVERRIDES_FILE).unlink()
    assert unstarted_jobs(sweep) is None
    assert "**6 of 8 runs complete.**" in (write_report(sweep) / "report.md").read_text()


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


def test_the_estimate_names_the_memory_and_warns_when_the_machine_has_too_little_free() -> None:
    assert memory_line(8704.0, 20_000.0) == " Memory: 8.5 GB at its peak so far."
    warning = memory_line(8704.0, 512.0)  # the default network at batch 128 on an 8 GB laptop
    assert warning.startswith(" Memory: 8.5 GB at its peak so far, and this machine has only 0.5 GB free beside it: "
                              "expect swapping")  # fmt: skip
    assert "lower data.batch_size" in warning
    assert memory_line(1024.0, None) == " Memory: 1.0 GB at its peak so far."  # not Linux: nothing to compare with


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


def headline_of(sweep: Path) -> dict[str, dict]:
    summary = json.loads((write_report(sweep) / "summary.json").read_text())
    return {row["conv"]: row for row in summary["headline"]}


def test_the_headline_says_what_was_measured(tmp_path: Path) -> None:
    # 17 epochs of 100 (early stopping), bf16, on 2,000 of the split's 10,000 test images, on a 2-thread CPU.
    sweep = tmp_path / "sweep"
    short = {"complete": True, "epochs_done": 17, "epochs_planned": 100, "stopped_by": "early_stopping",
             "precision": "bf16-mixed", "memory/peak_mb": 900.0}  # fmt: skip
    limited = {"data": {"source": {"num_test": 10_000}}, "trainer": {"limit_test_batches": 4, "accelerator": "cpu"}}
    for conv in ("standard", "separable"):
        fake_run(sweep / conv, conv, 0, 12, 0.8, 3e8, 60.0, extra=short, config=limited)
        (sweep / conv / "environment.json").write_text(json.dumps({"processor": "Intel Xeon", "cpu_threads": 2}))
    rows = headline_of(sweep)
    assert rows["separable"]["data"] == "Synthetic" and rows["separable"]["test images"] == "2,000 of 10,000 (a subset)"
    assert rows["separable"]["test acc (%)"].endswith("(on a subset of the test split)")
    assert rows["separable"]["epochs done / planned"] == "17/100" and rows["separable"]["precision"] == "bf16-mixed"
    assert rows["separable"]["machine"] == "Intel Xeon, 2 threads"
    assert rows["separable"]["process peak resident memory during fit, CPU (MB)"] == "900"
    markdown = (sweep / "report" / "report.md").read_text()
    assert "Data sets, as the data module described them: `Synthetic()`." in markdown

    # The same on a GPU, on the whole test split: its memory figure is CUDA's, under its own header.
    gpu = tmp_path / "gpu"
    for conv in ("standard", "separable"):
        fake_run(gpu / conv, conv, 0, 12, 0.8, 3e8, 60.0, extra={**DONE, "memory/peak_mb": 700.0},
                 config={"data": {"source": {"num_test": 2000}}, "trainer": {"accelerator": "auto"}})  # fmt: skip
        (gpu / conv / "environment.json").write_text(json.dumps({"processor": "AMD EPYC", "gpus": ["NVIDIA H200"]}))
    rows = headline_of(gpu)
    assert rows["standard"]["machine"] == "NVIDIA H200" and rows["standard"]["test images"] == "2,000"
    assert rows["standard"]["peak CUDA memory allocated during fit, GPU (MB)"] == "700"
    assert not any("resident" in column for column in rows["standard"])
    assert "subset" not in rows["standard"]["test acc (%)"]


def test_every_ratio_in_the_findings_is_of_two_numbers_the_headline_shows(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for conv, seed in itertools.product(("standard", "separable"), range(2)):
        separable = conv == "separable"
        costs = {"time/train_epoch_s": 0.41 + 0.01 * seed if separable else 0.50, "memory/peak_mb": 950.0 + separable,
                 "model/latency_b1_ms": 3.2 if separable else 2.9, **DONE}  # fmt: skip
        fake_run(sweep / f"{conv}{seed}", conv, seed, 12, 0.8, 2e8 if separable else 3e8, 2.3 if separable else 2.4,
                 extra=costs)  # fmt: skip
    rows = headline_of(sweep)
    findings = json.loads((sweep / "report" / "summary.json").read_text())["findings"]
    ratios = re.findall(r"([\d.]+)× the ([^;]+?) \(([\d,.]+) (\S+) vs ([\d,.]+) \S+\)", findings)
    assert {name for _, name, *_ in ratios} == {
        "parameters", "forward MACs per image", "median training time per epoch, without validation",
        "fit time, all epochs with validation", "process peak resident memory during fit, CPU", "latency, batch 1",
    }  # fmt: skip
    for ratio, name, other, unit, base in ratios:
        column = f"{name} ({unit})"
        shown = {conv: rows[conv][column].split(" ± ")[0] for conv in rows}  # the mean, as the headline shows it
        assert (shown["separable"], shown["standard"]) == (other, base), column
        assert float(ratio) == pytest.approx(float(other.replace(",", "")) / float(base.replace(",", "")), abs=0.006)
    assert "0.83× the median training time per epoch, without validation (0.415 s vs 0.500 s)" in findings


def test_two_seeds_say_why_they_cannot_decide_and_what_each_seed_shows(tmp_path: Path) -> None:
    # Separable 5 and 15 points ahead: each seed alone is far beyond test-image noise; over two seeds t = 2 with
    # one degree of freedom, p = 0.295.
    sweep = tmp_path / "sweep"
    for seed, gain in ((0, 0.05), (1, 0.15)):
        fake_run(sweep / f"standard{seed}", "standard", seed, 12, 0.70, 3e8, 10.0, extra=DONE)
        fake_run(sweep / f"separable{seed}", "separable", seed, 12, 0.70 + gain, 2e8, 10.0, extra=DONE)
    rows = headline_of(sweep)
    summary = json.loads((sweep / "report" / "summary.json").read_text())
    (comparison,) = summary["significance"]
    assert comparison["p_value"] == pytest.approx(stats.t.sf(2, df=1) * 2, abs=1e-3) and not comparison["significant"]
    assert all(pair["mcnemar_p"] < 0.001 for pair in comparison["pairs"])
    markdown = (sweep / "report" / "report.md").read_text()
    assert "Two seeds cannot support a test across trainings: the paired t-test has one degree of freedom" in markdown
    assert ("Per seed, McNemar's p is below 5% in 2 of 2 and the bootstrap 95% interval excludes 0 in 2 of 2, each "
            "time with separable ahead: evidence that these trained networks differ on these test images, not that "
            "another training of each conv type would.") in markdown  # fmt: skip
    assert "two seeds cannot support a test across trainings: run at least 3" in summary["findings"]
    assert rows["separable"]["significant at 5%"] == "no (p = 0.295; two seeds cannot decide: run ≥ 3)"


def test_a_reader_does_not_trip_over_the_seeds_the_unpaired_cells_or_the_legend(tmp_path: Path) -> None:
    single = tmp_path / "single"
    fake_run(single / "run", "standard", 0, 12, 0.8, 3e8, 10.0, extra=DONE)
    assert headline_of(single)["standard"]["seeds"] == "1 (seed 0)"  # not "0", read as "no seeds"

    unpaired = tmp_path / "unpaired"
    fake_run(unpaired / "standard", "standard", 0, 12, 0.8, 3e8, 10.0, extra=DONE)
    fake_run(unpaired / "separable", "separable", 1, 12, 0.8, 2e8, 10.0, extra=DONE)
    row = headline_of(unpaired)["separable"]
    assert [value for value in row.values() if "not paired" in str(value)] == ["not paired: see 'Not compared'"]

    def legend(growth_rates: tuple[int, ...]) -> tuple[list[str], str]:
        runs = {conv: [fake_run(tmp_path / f"{conv}{k}{len(growth_rates)}", conv, 0, k, 0.7 + k / 100, 1e7 * k, 1.0)
                       for k in growth_rates] for conv in ("standard", "separable")}  # fmt: skip
        points = {conv: [Point(conv, f"model.growth_rate={r.config.model.growth_rate}", [r]) for r in rs]
                  for conv, rs in runs.items()}  # fmt: skip
        fig = plot_tradeoff(points)
        texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        title = fig._suptitle.get_text()
        plt.close(fig)
        return texts, title

    texts, title = legend((12,))  # one setting per conv type: no front, and none promised
    assert texts == ["standard", "separable"] and "Pareto" not in title
    texts, title = legend((6, 12, 24))
    assert "standard: Pareto front" in texts and "Pareto fronts chosen on validation accuracy" in title


def test_layer_gap_ticks_are_plain_numbers_around_every_line() -> None:
    rows = [{"conv": "separable ÷ standard", "k": 3, "size": size, "channels": c, "mac_ratio_measured": 1 / c + 1 / 9,
             "forward_backward_time_ratio": 0.3 * size / 8} for size in (8, 32) for c in (16, 64, 256)]  # fmt: skip
    fig = layer_gap_figure(rows)
    ax = fig.axes[0]
    fig.canvas.draw()
    low, high = ax.get_ylim()
    shown = [t for t in ax.get_yticklabels() if low * 0.999 <= t.get_position()[1] <= high * 1.001]
    plt.close(fig)
    assert not any("e" in t.get_text() or "$" in t.get_text() for t in shown)  # no 10^-1, no 1e-01
    ticks = [float(t.get_text()) for t in shown]
    lowest_mac = min(r["mac_ratio_measured"] for r in rows)
    assert min(ticks) <= lowest_mac and low == pytest.approx(min(ticks))  # a labelled tick at or below the MACs
    assert max(ticks) >= 1.2 and high == pytest.approx(max(ticks))


def test_per_epoch_costs_are_summed_up_over_all_epochs_not_taken_from_the_last(tmp_path: Path) -> None:
    """Time per epoch and images/s are the medians of their curves (an epoch slowed by other work moves them
    little); the peak memory is the largest logged (a resumed run's first process may have peaked higher)."""
    curves = {"time/train_epoch_s": [(0, 95.0), (1, 90.0), (2, 92.0), (3, 250.0)],
              "time/train_images_per_s": [(0, 470.0), (1, 500.0), (2, 489.0), (3, 180.0)],
              "memory/peak_mb": [(0, 1660.0), (1, 1660.0), (2, 1480.0), (3, 1480.0)]}  # fmt: skip
    last_epoch = {"time/train_epoch_s": 250.0, "time/train_images_per_s": 180.0, "memory/peak_mb": 1480.0}
    run = Run(path=tmp_path, name="cut-and-resumed", metrics=dict(last_epoch), curves=curves)
    settle_costs(run)
    assert run.metrics["time/train_epoch_s"] == 93.5 and run.metrics["time/train_images_per_s"] == 479.5
    assert run.metrics["memory/peak_rss_mb"] == 1660.0  # a CPU run: its resident-memory definition
    without_curves = Run(path=tmp_path, name="metrics only", metrics=dict(last_epoch))
    settle_costs(without_curves)
    assert without_curves.metrics == last_epoch | {"memory/peak_rss_mb": 1480.0}
