"""A sweep stopped again and again (time limit, SIGKILL) and continued by the same command ends as if never cut."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMOKE, run_entry

from sepdense.checkpoints import load_checkpoint
from sepdense.report.build import write_report
from sepdense.stopping import TIME_LIMIT_EXIT

# The smoke_sweep fixture's command (conftest.py): the uninterrupted sweep to come back to.
SWEEP = ["train.py", "-m", *SMOKE, "model.conv=separable,standard", "seed=0,1"]
FIRST_JOB = "model.conv=separable,seed=0,callbacks.progress_bar=null,debug=smoke"
COMPARED = ("val/acc", "val/acc_best", "test/acc", "test/loss", "test/f1")
WITH_KILL_AT = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}


def digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_sweep_cut_by_its_time_limit_and_killed_continues_to_the_uninterrupted_result(
    tmp_path: Path, smoke_sweep: Path
) -> None:
    # 1. The time limit is reached half a second into the first job (kill_at.DeadlineSoon): that job saves its
    #    step and stops, no other job starts, the command exits with 124 and says how to continue.
    deadline = "+hydra.callbacks.deadline._target_=kill_at.DeadlineSoon"
    cut = run_entry(*SWEEP, "time_limit=00:00:01:00", deadline, log_dir=tmp_path, check=False, env=WITH_KILL_AT)
    assert cut.returncode == TIME_LIMIT_EXIT, cut.stderr[-2000:]
    (line,) = [x for x in cut.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: Time limit time_limit=00:00:01:00 reached: saved epoch ")
    assert " ".join(SWEEP[1:]) in line and line.endswith("resume=true")  # the same command, continued
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    assert [p.name for p in sweep_dir.iterdir() if p.is_dir()] == [FIRST_JOB]
    first = sweep_dir / FIRST_JOB
    saved = json.loads((first / "metrics.json").read_text())
    assert saved["complete"] is False and saved["stopped_by"] == "time_limit" and "test/acc" not in saved
    report = (write_report(sweep_dir) / "report.md").read_text()
    assert "0 of 1 run complete" in report and "in progress (0/2 epochs done; stopped by time_limit)" in report

    # 2. Continued with the same command, killed once the first job has finished (its report being written).
    killed = run_entry(*SWEEP, "resume=true", "+hydra.callbacks.kill._target_=kill_at.KillAtJobEnd",
                       log_dir=tmp_path, check=False, env=WITH_KILL_AT)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((first / "metrics.json").read_text())["complete"] is True
    finished = {p.name: digest(p) for p in (first / "checkpoints").iterdir()}

    # 3. Continued until done: the finished job is skipped, its checkpoints untouched; the others run.
    run_entry(*SWEEP, "resume=true", log_dir=tmp_path)
    assert [p.name for p in (tmp_path / "train" / "multiruns").iterdir()] == [sweep_dir.name]
    assert {p.name: digest(p) for p in (first / "checkpoints").iterdir()} == finished
    jobs = sorted(p.name for p in sweep_dir.iterdir() if (p / "metrics.json").is_file())
    assert jobs == sorted(p.name for p in smoke_sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 4
    for job in jobs:
        final, expected = (load_checkpoint(d / job / "checkpoints" / "last.ckpt") for d in (sweep_dir, smoke_sweep))
        assert final["global_step"] == expected["global_step"] == 8
        for name, tensor in expected["state_dict"].items():
            assert torch.allclose(final["state_dict"][name].double(), tensor.double(), rtol=1e-5, atol=1e-7), name
        resumed, uninterrupted = (json.loads((d / job / "metrics.json").read_text()) for d in (sweep_dir, smoke_sweep))
        for key in COMPARED:
            assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-5), (job, key)
    assert "4 of 4 runs complete" in (sweep_dir / "report" / "report.md").read_text()
