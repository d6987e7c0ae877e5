"""OmegaConf resolvers used by the configs; registered when the entry points import this module."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from sepdense.runs import CHECKPOINT_DIR, OVERRIDES_FILE, is_run_dir

RESUME_KEY = "resume"
# Overrides that do not make a different run: a continued run or sweep may change them.
NOT_THE_COMMAND = (RESUME_KEY, "time_limit")
# Paths would nest directories in a job's name; they stay in its saved config. So do NOT_THE_COMMAND's keys.
NOT_IN_JOB_NAMES = ("paths.root_dir", "paths.data_dir", "paths.log_dir", "data.source.root", "data.source.cache_dir",
                    "ckpt_path", *NOT_THE_COMMAND)  # fmt: skip
# Of those, the ones that make another run: they enter a job's name as a hash.
HASHED_IN_JOB_NAMES = ("paths.data_dir", "data.source.root", "data.source.cache_dir", "ckpt_path")
# What tells the runs of a comparison apart comes first in a job's name (TensorBoard's run list cuts long names).
JOB_NAME_FIRST = ("model.conv", "seed")
MULTIRUN_FILE = "multirun.yaml"


def _key(override: object) -> str:
    return str(override).lstrip("+~").split("=", 1)[0]


def _the_command(overrides: Sequence[str]) -> list[str]:
    return sorted(str(o) for o in overrides if _key(o) not in NOT_THE_COMMAND)


def _is_true(resume: object) -> bool:
    return resume in (True, "true", "True")


def _by_recency(run_dirs: list[Path]) -> list[Path]:
    """Newest first, by the time of their latest checkpoint (or of the directory): names alone may tie."""

    def latest(path: Path) -> int:
        times = [p.stat().st_mtime_ns for p in (path / CHECKPOINT_DIR).glob("*.ckpt")]
        return max(times, default=path.stat().st_mtime_ns)

    return sorted(run_dirs, key=latest, reverse=True)


def run_dir(resume: object, runs_dir: str, new_dir: str, overrides: Sequence[str]) -> str:
    """The directory of a single run: ``new_dir`` normally; the run to continue when resuming.

    ``resume=<run dir>`` continues that run. ``resume=true`` continues the most recent run under
    ``runs_dir`` started with the same overrides (apart from ``resume`` and ``time_limit``) that has
    a checkpoint; where there is none, ``new_dir``, where training stops with a clear message (see
    ``train``). A ``resume`` path that is not a run directory also gets ``new_dir``, where training
    stops with a clear error: raising here would surface as a traceback from inside Hydra.
    """
    if resume in (None, False, "false", "False"):
        return new_dir
    if not _is_true(resume):
        return str(resume) if is_run_dir(Path(str(resume))) else new_dir
    wanted = _the_command(overrides)
    candidates = [saved.parent.parent for saved in Path(runs_dir).glob(f"*/{OVERRIDES_FILE}")]
    for candidate in _by_recency([c for c in candidates if any((c / CHECKPOINT_DIR).glob("*.ckpt"))]):
        if _the_command(OmegaConf.load(candidate / OVERRIDES_FILE)) == wanted:
            return str(candidate)
    return new_dir


def command_line_overrides(argv: Sequence[str] | None = None) -> list[str]:
    """The overrides of this command as typed (``model.conv=separable,standard``), without Hydra's own."""
    argv = sys.argv[1:] if argv is None else argv
    return [a for a in argv if not a.startswith("-") and "=" in a and not _key(a).startswith(("hydra.", "hydra/"))]


def sweep_dir(resume: object, sweeps_dir: str, new_dir: str) -> str:
    """The directory of a sweep: ``new_dir``, or with ``resume=true`` the most recent sweep of the same command.

    "The same command": the same overrides on the command line, apart from ``resume`` and ``time_limit``.
    Its jobs then keep their directories: finished ones are skipped, the others continue or start. The
    command is read from the command line, where the sweep is launched: the answer is cached, and Hydra
    copies that cache into each job's config (whose own overrides are the job's, not the sweep's).
    """
    if not _is_true(resume):
        return new_dir
    wanted = _the_command(command_line_overrides())
    for saved in sorted(Path(sweeps_dir).glob(f"*/{MULTIRUN_FILE}"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        if _the_command(OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task", default=[])) == wanted:
            return str(saved.parent)
    # Launched with resume=true from the start (a cluster job that may be resubmitted), or mistyped: say which.
    print(f"[sepdense] resume=true: no earlier sweep of this command under {sweeps_dir}; starting a new one in "
          f"{new_dir}.", file=sys.stderr)  # fmt: skip
    return new_dir


def job_name(overrides: Sequence[str]) -> str:
    """A sweep job's directory name: its overrides, conv type and seed first, then the rest in name order.

    Data paths and checkpoints stay out of the name, as a short hash of them (jobs swept over
    ``data.source.root=a,b`` must not share a directory); the log directories and what does not make
    another run (``resume``, ``time_limit``) leave no trace in it.
    """
    items = [str(o) for o in overrides if _key(o) not in NOT_IN_JOB_NAMES]
    first = [o for key in JOB_NAME_FIRST for o in items if _key(o) == key]
    name = ",".join(first + sorted(o for o in items if _key(o) not in JOB_NAME_FIRST)) or "defaults"
    hidden = sorted(str(o) for o in overrides if _key(o) in HASHED_IN_JOB_NAMES)
    return f"{name},paths={hashlib.sha1('|'.join(hidden).encode()).hexdigest()[:8]}" if hidden else name


def register() -> None:
    for name, resolver in (("sepdense.run_dir", run_dir), ("sepdense.job_name", job_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("sepdense.sweep_dir"):
        OmegaConf.register_new_resolver("sepdense.sweep_dir", sweep_dir, use_cache=True)
