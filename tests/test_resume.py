"""Nothing is lost when a run dies: a SIGKILLed run resumes from last.ckpt and ends as if never interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMOKE, run_entry
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog

from sepdense.runs import read_curves

# Long enough epochs (~2 s on 2 cores) to kill one in the middle; deterministic algorithms on CPU.
RUN = [*SMOKE, "trainer.deterministic=true", "trainer.max_epochs=3", "trainer.limit_train_batches=12"]
COMPARED = ("train/loss", "val/loss", "val/acc", "val/acc_best", "test/acc", "test/loss", "test/f1")


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    run_entry("train.py", *RUN, log_dir=tmp_path / "reference")
    (reference_dir,) = (tmp_path / "reference" / "train" / "runs").iterdir()
    reference = json.loads((reference_dir / "metrics.json").read_text())

    crash_logs = tmp_path / "crash"
    cmd = [sys.executable, "train.py", *RUN, f"paths.log_dir={crash_logs}"]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(crash_logs.glob("train/runs/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    (run_dir,) = (crash_logs / "train" / "runs").iterdir()
    assert not (run_dir / "metrics.json").exists(), "the run finished before it was killed"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["epoch"] < 2

    run_entry("train.py", *RUN, "resume=true", log_dir=crash_logs)
    assert [p.name for p in (crash_logs / "train" / "runs").iterdir()] == [run_dir.name]  # the same run directory
    resumed = json.loads((run_dir / "metrics.json").read_text())
    for key in COMPARED:
        assert resumed[key] == pytest.approx(reference[key], rel=1e-6, abs=1e-7), key
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3 * 12
    # One TensorBoard run, continued by the resumed process: the val/acc curve has every epoch.
    assert [epoch for epoch, _ in read_curves(run_dir / "tensorboard")["val/acc"]] == [0, 1, 2]
    # The steps trained again after the resume replace those the killed run logged after its checkpoint:
    # TensorBoard is told to hide everything from the checkpoint's next step on (purge_step).
    events = [
        e for f in (run_dir / "tensorboard").glob("events.out.tfevents.*") for e in EventFileLoader(str(f)).Load()
    ]
    restarts = [e.step for e in events if e.HasField("session_log") and e.session_log.status == SessionLog.START]
    assert restarts == [saved["global_step"] + 1]


def test_resume_of_a_directory_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    result = run_entry("train.py", *SMOKE, f"resume={tmp_path}", log_dir=tmp_path, check=False)
    assert result.returncode == 1 and "is not a run directory" in result.stderr
