"""When and why a run stops: the invocation's time limit, and the record of whether a run finished.

``time_limit=DD:HH:MM:SS`` counts from the start of this command (``python train.py ...``), for a
single run or a whole sweep, not from the start of the run as Lightning's ``trainer.max_time`` does
(whose Timer restores the time already spent from the checkpoint, so a resumed run with the same
limit stops at once). What ``metrics.json`` says of a run's end (``fit_ending``, ``interrupted``, ``failed``) is
read back through ``is_complete`` by training (skip a finished job), the report (never count an unfinished run)
and the run directory's reader (``sepdense.runs``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from sepdense.errors import ConfigError

# The command that started a sweep's worker processes (joblib), and when: "<pid>:<wall-clock start>", inherited by
# them, so that a job in a worker counts its time limit from the command's start, not from its worker's.
INVOCATION_ENV = "SEPDENSE_INVOCATION"


def _invocation_start() -> float:
    """The command's start on this process's monotonic clock: now, or, in a worker of a parallel sweep, the start
    of the command that launched it (started later, the worker would otherwise get more time than the command)."""
    now = time.monotonic()
    pid, _, started = os.environ.get(INVOCATION_ENV, "").partition(":")
    if pid == str(os.getppid()):
        try:
            return now - max(0.0, time.time() - float(started))
        except ValueError:
            pass
    return now


# This module is imported by the entry points' first import (sepdense.cli): the command's start.
INVOCATION_START = _invocation_start()


def share_start_with_workers() -> None:
    """Before a sweep starts its worker processes: tell them when this command started (see ``INVOCATION_ENV``)."""
    os.environ[INVOCATION_ENV] = f"{os.getpid()}:{time.time() - (time.monotonic() - INVOCATION_START)}"


def in_worker_process() -> bool:
    """Whether this process is a job of a parallel sweep, in a worker its command started: a multirun whose launcher
    runs jobs outside the command's process (not Hydra's basic one), and whose command shared its start with it."""
    if not is_multirun() or not _in_sweep_worker():
        return False
    launcher = str(HydraConfig.get().launcher.get("_target_", ""))
    return not launcher.endswith(".BasicLauncher")


# A parallel sweep stopped by a signal. joblib, left to itself, ends its workers unsaved when the command gets
# Ctrl-C, and leaves them training on when the command alone gets SIGTERM (kill, `timeout`). Instead the command
# passes the signal on to its workers as SIGTERM and waits: each running job saves its step and returns its record,
# the jobs not yet started are not started, and the sweep ends with one line and 128 + the signal's number.
_SWEEP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_command_stop: dict[str, Any] = {"by": None, "previous": {}}
# In a worker: the signal that stopped it (its later jobs of the same command do not start), that command, and
# whether a job is running in it.
_worker_stop: dict[str, Any] = {"by": None, "command": None, "job": False, "installed": False}


def _child_pids() -> list[int]:
    """This process's children (the sweep's workers and joblib's resource trackers, which ignore SIGTERM), from
    /proc; none where there is no /proc (there the workers get Ctrl-C from the terminal, not a SIGTERM passed on)."""
    me, children = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after the command name: state, parent pid, ...
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == me:
            children.append(int(stat.parent.name))
    return children


def _signal_children(signum: int) -> None:
    for pid in _child_pids():
        with contextlib.suppress(OSError):  # ended meanwhile
            os.kill(pid, signum)


def _on_command_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if _command_stop["by"] is None and not _child_pids():  # joblib has not started its workers: nothing to save
        print(f"[sepdense] {name} before any job started: nothing was trained.", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    if _command_stop["by"] is None:
        _command_stop["by"] = name
        print(f"[sepdense] {name}: each running job saves its step and stops, and no other job starts; the sweep "
              f"then ends. Send it again to end at once, losing the steps not saved yet.", file=sys.stderr,
              flush=True)  # fmt: skip
        _signal_children(signal.SIGTERM)
        return
    _signal_children(signal.SIGKILL)
    print(f"[sepdense] {name} again: ended at once; each job continues from its last saved checkpoint with "
          f"resume=true.", file=sys.stderr, flush=True)  # fmt: skip
    os._exit(128 + signum)


def pass_signals_to_workers() -> None:
    """In a parallel sweep's command (joblib's workers), while its jobs run: Ctrl-C or SIGTERM stops the workers'
    jobs cleanly (see ``_SWEEP_SIGNALS``), a second one ends everything at once. Undone by ``signals_received``."""
    _command_stop["by"] = None
    with contextlib.suppress(ValueError):  # not the main thread (an embedding application): left as they are
        for signum in _SWEEP_SIGNALS:
            _command_stop["previous"][signum] = signal.signal(signum, _on_command_signal)


def signals_received() -> str | None:
    """After a parallel sweep's jobs: restore the command's signal handlers; the signal that stopped it, if any."""
    for signum, handler in _command_stop["previous"].items():
        signal.signal(signum, handler)
    _command_stop["previous"] = {}
    by, _command_stop["by"] = _command_stop["by"], None
    return by


def _in_sweep_worker() -> bool:
    """Whether this process is a worker that a parallel sweep's command started (see ``INVOCATION_ENV``)."""
    return os.environ.get(INVOCATION_ENV, "").partition(":")[0] == str(os.getppid())


def _on_worker_signal(signum: int, frame: Any) -> None:
    _worker_stop["by"] = _worker_stop["by"] or signal.Signals(signum).name
    if signum == signal.SIGINT and _worker_stop["job"]:
        raise KeyboardInterrupt  # Ctrl-C stops the running job as in a single run (its step is saved)
    # SIGTERM: Lightning's own handler, which calls this one too, stops the fit at the next batch boundary; one that
    # came before the fit began stops it at its first batch (``worker_stop_requested``).


def watch_signals_in_worker(command: str) -> None:
    """In a worker of a parallel sweep, from its first job on: remember a SIGINT or SIGTERM, so that one that
    reaches it between jobs, or before fitting, still stops its jobs. ``command`` tells the command whose job this
    is: joblib reuses its workers for the next sweep run from the same process (a notebook), which starts anew."""
    if _worker_stop["command"] not in (None, command):
        _worker_stop["by"] = None
    _worker_stop["command"] = command
    _watch_worker_signals()


def _watch_worker_signals() -> None:
    if not _worker_stop["installed"]:
        with contextlib.suppress(ValueError):  # not the worker's main thread: its signals are not ours to handle
            for signum in _SWEEP_SIGNALS:
                signal.signal(signum, _on_worker_signal)
        _worker_stop["installed"] = True


# A worker imports this module with its first job, seconds before that job starts: from then on a signal passed on
# by the command is remembered, not the end of the worker (which joblib would report as a crash, with no report).
if _in_sweep_worker():
    _watch_worker_signals()


def worker_stop_requested() -> str | None:
    """The signal that stopped this worker of a parallel sweep (None: none, or not a worker)."""
    return _worker_stop["by"]


class JobRunning:
    """``with JobRunning():`` around a worker's job: Ctrl-C then raises KeyboardInterrupt, as in a single run."""

    def __enter__(self) -> None:
        _worker_stop["job"] = True

    def __exit__(self, *exc: object) -> None:
        _worker_stop["job"] = False


TIME_LIMIT_FORMAT = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})$")
# The exit status of a command stopped by its time limit (as coreutils' `timeout` uses).
TIME_LIMIT_EXIT = 124
# metrics.json's keys for a run that failed (the reason, and whether running it again would fail the same way) and
# for one continued past the epochs it was planned for (those it was planned for).
FAILURE, FAILURE_REPEATS, EXTENDED = "failure", "failure_repeats", "extended_from_epochs"


def time_limit_seconds(limit: Any) -> float | None:
    """``time_limit`` as seconds (None: no limit); ``DD:HH:MM:SS`` as Lightning's ``max_time`` writes it."""
    if limit in (None, "", "null"):
        return None
    match = TIME_LIMIT_FORMAT.match(str(limit).strip())
    if match is None:
        raise ConfigError(f"time_limit={limit} is not DD:HH:MM:SS (e.g. time_limit=00:11:30:00 for 11 h 30 min).")
    days, hours, minutes, seconds = (int(g) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def time_left(limit: Any) -> float | None:
    """Seconds left of this command's time limit (negative once it has passed; None: no limit)."""
    seconds = time_limit_seconds(limit)
    return None if seconds is None else seconds - (time.monotonic() - INVOCATION_START)


def is_multirun() -> bool:
    return HydraConfig.initialized() and str(HydraConfig.get().mode).endswith("MULTIRUN")


def continue_command(sweep: bool | None = None) -> str:
    """The command that continues this run, or the sweep it belongs to (``sweep``; by default, whether Hydra runs a
    multirun): the same overrides with resume=true."""
    if is_multirun() if sweep is None else sweep:
        argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("train.py") else ["-m", "<the sweep's overrides>"]
    else:
        argv = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return " ".join(["python train.py", *(a for a in argv if not a.lstrip("+~").startswith("resume=")), "resume=true"])


def fit_ending(epochs_done: int, epochs_planned: int | None, steps_done: int, steps_planned: int,
               early_stopped: bool) -> dict[str, Any]:  # fmt: skip
    """What metrics.json records of how fitting ended: ``complete``, the epochs done of those planned, why it ended.

    Early stopping ends a run before its epochs, by its own rule: that run is complete.
    """
    if early_stopped:
        stopped_by = "early_stopping"
    elif steps_planned > 0 and steps_done >= steps_planned:
        stopped_by = "max_steps"
    elif epochs_planned is not None and epochs_planned >= 0 and epochs_done >= epochs_planned:
        stopped_by = "max_epochs"
    else:
        stopped_by = "stopped early"
    return {"complete": stopped_by != "stopped early", "epochs_done": epochs_done, "epochs_planned": epochs_planned,
            "stopped_by": stopped_by}  # fmt: skip


def interrupted(epochs_done: int, epochs_planned: int | None, by: str) -> dict[str, Any]:
    """The record of a run stopped by a signal or the time limit before its end."""
    return {"complete": False, "epochs_done": epochs_done, "epochs_planned": epochs_planned, "stopped_by": by}


def failed(reason: str, repeats: bool) -> dict[str, Any]:
    """The record of a run that failed: not complete, why, and whether a resume would only fail again."""
    return {"complete": False, "stopped_by": "failure", FAILURE: reason, FAILURE_REPEATS: repeats}


def is_complete(metrics: dict[str, Any]) -> bool:
    """A run's metrics.json says it finished (runs saved before the ``complete`` key existed did): the one test of
    "is this run complete", for training (skip a finished job), the report and the run directory's reader."""
    return metrics.get("complete", True) is True
