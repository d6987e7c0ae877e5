"""Nothing is lost when a run dies: cut anywhere (SIGTERM or SIGKILL), it resumes to the uninterrupted result."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMOKE, run_entry
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sepdense.checkpoints import load_checkpoint

# Smoke runs (2 epochs of 4 steps), deterministic algorithms on CPU: an exact result to come back to.
RUN = [*SMOKE, "trainer.deterministic=true"]
COMPARED = ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc", "test/loss", "test/f1")
# (where the run is cut, with which signal): tests/kill_at.py sends it from inside the process.
CUTS = {
    "SIGTERM mid-epoch": (
        "+callbacks.kill.place=train_batch",
        "+callbacks.kill.step=2",
        "+callbacks.kill.signal=SIGTERM",
    ),
    "SIGKILL during validation": ("+callbacks.kill.place=validation", "+callbacks.kill.step=8"),  # epoch 2's
    "SIGKILL right after a checkpoint": ("+callbacks.kill.place=after_checkpoint", "+callbacks.kill.step=4"),
    "SIGKILL during test": ("+callbacks.kill.place=test",),
    "SIGKILL while the report is written": ("+hydra.callbacks.kill._target_=kill_at.KillInReport",),
}
WITH_KILL_AT = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log_dir = tmp_path_factory.mktemp("reference")
    run_entry("train.py", *RUN, log_dir=log_dir)
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    return run_dir


def only_run(log_dir: Path) -> Path:
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("cut", list(CUTS))
def test_a_run_cut_anywhere_resumes_to_the_uninterrupted_result(cut: str, reference: Path, tmp_path: Path) -> None:
    kill = CUTS[cut]
    callback = [] if "hydra.callbacks" in kill[0] else ["+callbacks.kill._target_=kill_at.KillAt"]
    result = run_entry("train.py", *RUN, *callback, *kill, log_dir=tmp_path, check=False, env=WITH_KILL_AT)
    run_dir = only_run(tmp_path)
    if cut.startswith("SIGTERM"):
        # A clean stop: exit code 128 + 15, one line saying what was saved and how to go on, and a
        # checkpoint of the very step (mid-epoch), not of the last finished epoch.
        assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
        assert "Stopped by SIGTERM: saved epoch 1 of 2, step 2, in" in line and line.endswith("resume=true")
        saved = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 2
        fit_s_before = saved["callbacks"]["Timing"]["fit_s"]
    else:
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not (run_dir / "report" / "report.md").exists(), "the run was not cut before its end"

    run_entry("train.py", *RUN, f"resume={run_dir}", log_dir=tmp_path)
    assert only_run(tmp_path) == run_dir  # continued in its own directory

    final, expected = (load_checkpoint(d / "checkpoints" / "last.ckpt") for d in (run_dir, reference))
    assert final["global_step"] == expected["global_step"] == 8
    for name, tensor in expected["state_dict"].items():  # bitwise: deterministic CPU training
        assert torch.equal(final["state_dict"][name], tensor), name
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    for key in COMPARED:
        assert resumed[key] == uninterrupted[key], key
    assert resumed["time/fit_s"] > (fit_s_before if cut.startswith("SIGTERM") else 0)  # both processes counted

    # No TensorBoard step twice: what the cut run logged after its checkpoint is purged, then logged anew.
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    reference_events = EventAccumulator(str(reference / "tensorboard"), size_guidance={"scalars": 0})
    reference_events.Reload()
    for tag in ("train/loss", "val/acc", "train/loss_step", "test/acc"):
        steps = [e.step for e in events.Scalars(tag)]
        assert steps == [e.step for e in reference_events.Scalars(tag)], tag
    with open(run_dir / "report" / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 1  # one row for the one run


def test_resume_of_a_directory_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    result = run_entry("train.py", *SMOKE, f"resume={tmp_path}", log_dir=tmp_path, check=False)
    assert result.returncode == 1 and "is not a run directory" in result.stderr
    assert not (tmp_path / "train" / "runs").exists() or not list((tmp_path / "train" / "runs").iterdir())


def test_resume_with_nothing_to_resume_stops_and_says_so(tmp_path: Path) -> None:
    result = run_entry("train.py", *SMOKE, "resume=true", log_dir=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        "resume=true: no earlier run of this command (debug=smoke callbacks.progress_bar=null paths.log_dir="
        in result.stderr
    )
    assert "leave out resume=true" in result.stderr
    assert not (tmp_path / "train" / "runs").exists() or not list((tmp_path / "train" / "runs").iterdir())


def test_a_run_resumed_with_more_epochs_is_recorded_as_extended(compose_train_cfg) -> None:
    """Resumed with trainer.max_epochs above its plan, the run goes on, and metrics.json and the report say that it was
    extended, not planned so (its learning-rate schedule was the shorter plan's until the resume)."""
    from omegaconf import OmegaConf

    from sepdense.runs import CONFIG_FILE, load_run
    from sepdense.stopping import EXTENDED
    from sepdense.train import train

    cfg = compose_train_cfg(*SMOKE, "trainer.max_epochs=1", "test=false")
    run_dir = Path(cfg.paths.output_dir)
    (run_dir / CONFIG_FILE).parent.mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / CONFIG_FILE)  # what Hydra writes when the run starts
    first = train(cfg)
    assert EXTENDED not in first
    extended = train(compose_train_cfg(*SMOKE, "trainer.max_epochs=2", "test=false", f"resume={run_dir}"))
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved[EXTENDED] == extended[EXTENDED] == 1 and saved["epochs_planned"] == 2 and saved["complete"]
    assert load_run(run_dir).status == "complete (extended: planned for 1 epochs, continued to 2/2 epochs)"
