"""A sweep stopped again and again (time limit, SIGKILL) and continued by the same command ends as if never cut."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMOKE, run_entry
from omegaconf import OmegaConf

from sepdense.checkpoints import load_checkpoint
from sepdense.report.build import write_report
from sepdense.runs import stopped_runs
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
    assert "0 of 4 runs complete (3 not started)" in report  # the sweep plans 4 jobs (its multirun.yaml)
    assert "in progress (0/2 epochs done; stopped by time_limit)" in report
    assert "- model.conv=standard,seed=1: not started" in report

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


# The 100-epoch study's command (README): its job directories must keep their names when it is continued.
STUDY_JOB = ["model.conv=standard", "seed=0", "experiment=comparison_cpu", "data=imagefolder",
             "data.source.root=/work/main/data/cifar10-jpeg", "paths.log_dir=/root/sepdense-study",
             "time_limit=00:02:05:00", "resume=true"]  # fmt: skip
# debug=smoke's own values, spelled out: a sweep of many long overrides (the 252-character job names).
LONG = ["model.conv=standard", "seed=0", "model.block_config=[2,2,2,2]", "model.growth_rate=12", "trainer.max_epochs=2",
        "data.batch_size=64", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "trainer.log_every_n_steps=1", "module.label_smoothing=0.1"]  # fmt: skip


def test_job_names_are_bounded_and_short_ones_kept() -> None:
    from sepdense.resolvers import JOB_NAME_MAX, job_name

    assert job_name(STUDY_JOB) == "model.conv=standard,seed=0,data=imagefolder,experiment=comparison_cpu,paths=5c06dc84"
    eleven = [*LONG, "optimizer.weight_decay=0.0005", "data.eval_batch_size=256", "data.val_size=256"]
    name = job_name(eleven)
    assert name.startswith("model.conv=standard,seed=0,overrides=") and len(name) <= JOB_NAME_MAX
    assert job_name([*eleven[:-1], "data.val_size=512"]) != name  # the rest is in the hash
    assert "/" not in job_name(["model.conv=../../../elsewhere/x", "seed=0"])


@pytest.mark.slow
def test_a_sweep_of_long_overrides_started_under_the_old_names_is_continued(tmp_path: Path) -> None:
    """Its job gets a bounded name and a report; a sweep whose job directory bears the full old name (made before
    names were bounded) is continued in that directory by resume=true, not started anew beside it."""
    from sepdense.resolvers import _full_job_name

    sweep = ["train.py", "-m", *SMOKE, *LONG[:9]]  # a 243-character name before names were bounded
    deadline = "+hydra.callbacks.deadline._target_=kill_at.DeadlineSoon"
    cut = run_entry(*sweep, "time_limit=00:00:01:00", deadline, log_dir=tmp_path, check=False, env=WITH_KILL_AT)
    assert cut.returncode == TIME_LIMIT_EXIT, cut.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    (job,) = [p for p in sweep_dir.iterdir() if p.is_dir()]
    assert job.name.startswith("model.conv=standard,seed=0,overrides=")
    old_name = _full_job_name([*SMOKE, *LONG[:9]])
    assert len(old_name) > 200
    job = job.rename(sweep_dir / old_name)
    saved_step = load_checkpoint(job / "checkpoints" / "last.ckpt")["global_step"]
    saved_config = (job / ".hydra" / "config.yaml").read_bytes()

    done = run_entry(*sweep, "resume=true", log_dir=tmp_path)
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == sorted([old_name, "report"])
    assert 0 < saved_step < 8 and load_checkpoint(job / "checkpoints" / "last.ckpt")["global_step"] == 8
    assert f"Resuming from {job}/checkpoints/" in done.stderr  # continued from its checkpoint, not restarted
    assert json.loads((job / "metrics.json").read_text())["complete"] is True
    assert (job / ".hydra" / "config.yaml").read_bytes() == saved_config
    assert (job / "report" / "report.md").is_file() and (sweep_dir / "report" / "report.md").is_file()
    assert "could not write the report" not in done.stdout


@pytest.mark.slow
def test_a_diverging_job_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = ["train.py", "-m", *SMOKE, "optimizer.lr=1e12,0.1"]
    result = run_entry(*sweep, log_dir=tmp_path, check=False)
    assert result.returncode == 1  # some failed
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    diverged, fine = (sweep_dir / f"callbacks.progress_bar=null,debug=smoke,optimizer.lr={lr}" for lr in
                      ("1000000000000.0", "0.1"))  # fmt: skip
    record = json.loads((diverged / "metrics.json").read_text())
    assert record["complete"] is False and record["failure_repeats"] is True and "NaN" in record["failure"]
    assert json.loads((fine / "metrics.json").read_text())["complete"] is True  # the job after it ran
    assert "1 of 2 runs complete" in (sweep_dir / "report" / "report.md").read_text()
    assert "failed (The train loss became NaN" in (sweep_dir / "report" / "report.md").read_text()
    assert "error: 1 job(s) of the sweep failed" in result.stderr
    # Continued: the finished job is skipped, the diverged one is not run again (it would diverge again).
    resumed = run_entry(*sweep, "resume=true", log_dir=tmp_path, check=False)
    assert resumed.returncode == 1 and "for a reason that would repeat: not run again" in resumed.stderr
    assert json.loads((diverged / "metrics.json").read_text()) == record
    assert not (diverged / "checkpoints").exists() or not list((diverged / "checkpoints").iterdir())


@pytest.mark.slow
def test_an_optuna_search_with_a_diverging_trial_goes_on(tmp_path: Path) -> None:
    """hparams_search=lr_wd: the trial whose loss diverges is a failed trial, and the search goes on to the next."""
    result = run_entry("train.py", "-m", "hparams_search=lr_wd", *SMOKE, "trainer.max_epochs=1",
                       "hydra.sweeper.n_trials=2", "optimizer.lr=choice(1e12,0.1)", log_dir=tmp_path,
                       check=False)  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    assert sorted(r["complete"] for r in records) == [False, True]  # seed 0's sampler tries both learning rates
    assert "recorded as failed; the sweep goes on" in result.stderr
    assert OmegaConf.load(sweep_dir / "optimization_results.yaml").best_params["optimizer.lr"] == 0.1


@pytest.mark.slow
def test_a_parallel_sweep_at_its_time_limit_saves_every_job_where_it_stopped(tmp_path: Path) -> None:
    """Two jobs at once (joblib): the one that reaches the time limit first stops without ending the other, which
    goes on to its own deadline (5 s later here) and saves its step too; the command then exits with 124."""
    sweep = ["train.py", "-m", *SMOKE, "hydra/launcher=local_parallel", "seed=0,1", "trainer.max_epochs=100"]
    deadline = ["+hydra.callbacks.deadline._target_=kill_at.DeadlineSoon", "+hydra.callbacks.deadline.per_seed=5"]
    cut = run_entry(*sweep, "time_limit=00:00:10:00", *deadline, log_dir=tmp_path, check=False, env=WITH_KILL_AT)
    assert cut.returncode == TIME_LIMIT_EXIT, cut.stderr[-3000:]
    (line,) = [x for x in cut.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: Time limit time_limit=00:00:10:00 reached: 2 run(s) not finished (")
    assert " ".join(sweep[1:]) in line and line.endswith("resume=true")
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 2
    steps = {}
    for job in jobs:
        saved = json.loads((job / "metrics.json").read_text())
        assert saved["stopped_by"] == "time_limit" and saved["complete"] is False, job.name
        assert "SIGTERM: saved epoch" in (job / "train.log").read_text(), job.name  # its very step, not an epoch's
        steps[job.name.split("seed=")[1][0]] = load_checkpoint(job / "checkpoints" / "last.ckpt")["global_step"]
    assert 0 < steps["0"] < steps["1"] < 100 * 4, steps  # seed 1 trained on after seed 0 had stopped


@pytest.mark.slow
@pytest.mark.parametrize("to, name", [("parent", "SIGTERM"), ("group", "SIGINT")])
def test_a_parallel_sweep_stopped_by_a_signal_saves_every_running_job_and_starts_no_other(
    tmp_path: Path, to: str, name: str
) -> None:
    """Two workers, three jobs. SIGTERM to the command alone (``kill <pid>``, ``timeout``) once left both workers
    training with nobody waiting for them; Ctrl-C (SIGINT to the whole group) let joblib end one of them unsaved,
    with a traceback. Now each running job saves its step, the third does not start, and the command exits with
    128 + the signal's number and one line; nothing of it is left running."""
    sweep = ["train.py", "-m", *SMOKE, "hydra/launcher=local_parallel", "seed=0,1,2", "trainer.max_epochs=100"]
    kill = ["+callbacks.kill._target_=kill_at.KillAt", "+callbacks.kill.place=train_batch", "+callbacks.kill.step=6",
            f"+callbacks.kill.signal={name}", f"+callbacks.kill.to={to}", "+callbacks.kill.only='seed=1'"]  # fmt: skip
    env = {**os.environ, **WITH_KILL_AT}
    # Its own process group, as a command typed in a terminal has (Ctrl-C reaches that group, not pytest).
    cut = subprocess.run([sys.executable, *sweep, *kill, f"paths.log_dir={tmp_path}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=env, start_new_session=True)  # fmt: skip
    assert cut.returncode == 128 + getattr(signal, name), cut.stderr[-3000:]
    assert "Traceback" not in cut.stderr, cut.stderr[-3000:]
    (line,) = [x for x in cut.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith(f"error: Stopped by {name}: 3 run(s) not finished (") and line.endswith("resume=true")
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = {p.name.split(",")[0]: p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()}
    for seed in ("seed=0", "seed=1"):
        saved = json.loads((jobs[seed] / "metrics.json").read_text())
        assert saved["stopped_by"] == "signal" and saved["complete"] is False, seed
        assert load_checkpoint(jobs[seed] / "checkpoints" / "last.ckpt")["global_step"] >= (
            6 if seed == "seed=1" else 1
        )
        assert ": saved epoch" in (jobs[seed] / "train.log").read_text(), seed  # its step at the signal, not an epoch's
    assert not (jobs["seed=2"] / "checkpoints").exists()  # not started: nothing trained
    # Nothing left running: a worker still training would go on writing into the sweep's directory.
    written = {p: p.stat().st_size for p in sweep_dir.rglob("*") if p.is_file()}
    time.sleep(3)
    assert {p: p.stat().st_size for p in sweep_dir.rglob("*") if p.is_file()} == written


@pytest.mark.slow
def test_a_parallel_sweep_signalled_while_a_job_is_testing_ends_as_stopped_not_as_a_success(tmp_path: Path) -> None:
    """Lightning ends a test on SIGTERM by exiting (SystemExit, code None): raised in a worker, joblib ended the
    other job unsaved and the command exited 0 without a report. Now the job is recorded as stopped (its test is
    run again on resume) and the sweep ends as stopped by SIGTERM."""
    sweep = ["train.py", "-m", *SMOKE, "hydra/launcher=local_parallel", "seed=0,1", "data.eval_batch_size=64"]
    kill = ["+callbacks.kill._target_=kill_at.KillAt", "+callbacks.kill.place=test", "+callbacks.kill.signal=SIGTERM",
            "+callbacks.kill.to=parent", "+callbacks.kill.only='seed=1'"]  # fmt: skip
    cut = run_entry(*sweep, *kill, log_dir=tmp_path, check=False, env=WITH_KILL_AT)
    assert cut.returncode == 128 + signal.SIGTERM and "Traceback" not in cut.stderr, cut.stderr[-3000:]
    (line,) = [x for x in cut.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: Stopped by SIGTERM: ") and "seed=1" in line
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    (tested,) = [p for p in sweep_dir.iterdir() if p.name.startswith("seed=1")]
    assert "stopped by SIGTERM outside training" in (tested / "train.log").read_text()
    assert "1 run(s) not finished" in line or "2 run(s) not finished" in line  # seed 0 may have finished first
    assert (sweep_dir / "report" / "report.md").is_file()


def test_runs_stopped_by_a_signal_are_told_from_runs_that_left_no_record(tmp_path: Path) -> None:
    for name, record in (("signalled", {"complete": False, "stopped_by": "signal"}),
                         ("limited", {"complete": False, "stopped_by": "time_limit"}),
                         ("done", {"complete": True, "stopped_by": "max_epochs"}), ("killed", None)):  # fmt: skip
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "config.yaml").write_text("seed: 0\n")
        if record is not None:
            (tmp_path / name / "metrics.json").write_text(json.dumps(record))
    assert sorted(stopped_runs(tmp_path)) == ["killed", "limited", "signalled"]
    assert stopped_runs(tmp_path, by=("signal",), unrecorded=False) == ["signalled"]


def test_a_worker_stopped_by_a_signal_starts_no_more_jobs_of_that_command_but_those_of_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """joblib reuses its workers for the next sweep from the same process (a notebook): a stop is remembered for
    the command it stopped only (its sweep directory and the multirun.yaml that command saved there)."""
    from sepdense import stopping

    # installed: pytest's own signal handlers stay as they are; the handler is called directly.
    monkeypatch.setattr(stopping, "_worker_stop", {"by": None, "command": None, "job": False, "installed": True})
    stopping.watch_signals_in_worker("sweep@1")
    stopping._on_worker_signal(signal.SIGTERM, None)  # between two jobs: remembered, nothing raised
    stopping.watch_signals_in_worker("sweep@1")  # the same command's next job
    assert stopping.worker_stop_requested() == "SIGTERM"
    stopping.watch_signals_in_worker("sweep@2")  # resume=true saved multirun.yaml again: another command
    assert stopping.worker_stop_requested() is None
    with stopping.JobRunning(), pytest.raises(KeyboardInterrupt):  # Ctrl-C during a job stops it, as in a run
        stopping._on_worker_signal(signal.SIGINT, None)
    assert stopping.worker_stop_requested() == "SIGINT"
