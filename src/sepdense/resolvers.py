"""OmegaConf resolvers used by the configs; registered when the entry points import this module."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sepdense.runs import CHECKPOINT_DIR, CONFIG_FILE, MULTIRUN_FILE, OVERRIDES_FILE, is_run_dir

RESUME_KEY = "resume"
# Overrides that do not make a different run: a continued run or sweep may change them.
NOT_THE_COMMAND = (RESUME_KEY, "time_limit", "retry_failed")
# What a resumed run may change besides these: where runs are kept (a run directory was named), and more epochs.
NOT_THE_RUN = (*NOT_THE_COMMAND, "paths.log_dir")
MORE_ALLOWED = "trainer.max_epochs"
# Paths would nest directories in a job's name; they stay in its saved config. So do NOT_THE_COMMAND's keys.
NOT_IN_JOB_NAMES = ("paths.root_dir", "paths.data_dir", "paths.log_dir", "data.source.root", "data.source.cache_dir",
                    "ckpt_path", *NOT_THE_COMMAND)  # fmt: skip
# Of those, the ones that make another run: they enter a job's name as a hash.
HASHED_IN_JOB_NAMES = ("paths.data_dir", "data.source.root", "data.source.cache_dir", "ckpt_path")
# What tells the runs of a comparison apart comes first in a job's name (TensorBoard's run list cuts long names).
JOB_NAME_FIRST = ("model.conv", "seed")
# Longer job names become conv type, seed and a hash: the report adds file names to them, under the file system's
# 255-byte limit on a name. Plain characters only (no '/', which would nest directories).
JOB_NAME_MAX = 160
PLAIN_NAME = re.compile(r"[\w.,=+\-\[\]:@%]+")


def _key(override: object) -> str:
    return str(override).lstrip("+~").split("=", 1)[0]


def _the_command(overrides: Sequence[str]) -> list[str]:
    return sorted(str(o) for o in overrides if _key(o) not in NOT_THE_COMMAND)


def resume_request(resume: object) -> bool | Path:
    """What ``resume`` asks for: False (a new run), True (the last run of the same command) or a run directory."""
    if resume in (None, False, "false", "False", "null", ""):
        return False
    return True if resume in (True, "true", "True") else Path(str(resume))


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
    request = resume_request(resume)
    if request is False:
        return new_dir
    if request is not True:
        return str(request) if is_run_dir(request) else new_dir
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
    if resume_request(resume) is not True:
        return new_dir
    wanted = _the_command(command_line_overrides())
    for saved in sorted(Path(sweeps_dir).glob(f"*/{MULTIRUN_FILE}"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        if _the_command(OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task", default=[])) == wanted:
            return str(saved.parent)
    # Launched with resume=true from the start (a cluster job that may be resubmitted), or mistyped: say which.
    print(f"[sepdense] resume=true: no earlier sweep of this command under {sweeps_dir}; starting a new one in "
          f"{new_dir}.", file=sys.stderr)  # fmt: skip
    return new_dir


def _full_job_name(overrides: Sequence[str]) -> str:
    items = [str(o) for o in overrides if _key(o) not in NOT_IN_JOB_NAMES]
    first = [o for key in JOB_NAME_FIRST for o in items if _key(o) == key]
    name = ",".join(first + sorted(o for o in items if _key(o) not in JOB_NAME_FIRST)) or "defaults"
    hidden = sorted(str(o) for o in overrides if _key(o) in HASHED_IN_JOB_NAMES)
    return f"{name},paths={_digest(hidden, 8)}" if hidden else name


def _digest(items: Sequence[str], length: int) -> str:
    return hashlib.sha1("|".join(items).encode()).hexdigest()[:length]


def job_name(overrides: Sequence[str], sweep_dir: str | None = None) -> str:
    """A sweep job's directory name: its overrides, conv type and seed first, then the rest in name order.

    Data paths and checkpoints stay out of the name, as a short hash of them (jobs swept over
    ``data.source.root=a,b`` must not share a directory); the log directories and what does not make
    another run (``resume``, ``time_limit``) leave no trace in it. A name longer than ``JOB_NAME_MAX`` or
    holding anything but plain characters is conv type and seed, then a hash of the rest (the whole
    overrides stay in the job's .hydra/overrides.yaml). In ``sweep_dir`` (by default the sweep's, when Hydra
    names a job; in a continued sweep), a job keeps the directory whose saved overrides are its own,
    however it was named then.
    """
    if sweep_dir is None and HydraConfig.initialized():
        sweep_dir = OmegaConf.select(HydraConfig.get(), "sweep.dir", default=None)
    saved = _saved_job(overrides, sweep_dir)
    if saved is not None:
        return saved
    name = _full_job_name(overrides)
    if len(name) <= JOB_NAME_MAX and PLAIN_NAME.fullmatch(name):
        return name
    first = [str(o) for key in JOB_NAME_FIRST for o in overrides if _key(o) == key and PLAIN_NAME.fullmatch(str(o))]
    rest = sorted(str(o) for o in overrides if _key(o) not in (*NOT_IN_JOB_NAMES, *JOB_NAME_FIRST)
                  or _key(o) in HASHED_IN_JOB_NAMES or not PLAIN_NAME.fullmatch(str(o)))  # fmt: skip
    return ",".join([*(o[:40] for o in first), f"overrides={_digest(rest, 12)}"])


def _saved_job(overrides: Sequence[str], sweep_dir: str | None) -> str | None:
    """The name of the job directory in ``sweep_dir`` that was started with these overrides, if any."""
    if not sweep_dir or not Path(sweep_dir).is_dir():
        return None
    wanted = _the_command(overrides)
    for saved in sorted(Path(sweep_dir).glob(f"*/{OVERRIDES_FILE}")):
        if _the_command(OmegaConf.load(saved)) == wanted:
            return saved.parent.parent.name
    return None


def saved_config_dir(resume: object, output_dir: str) -> str | None:
    """Where Hydra saves the run's config (``hydra.output_subdir``): nowhere when a resume finds it already there.

    A resume continues the run as it was: its saved config stays as it was written when the run
    started (``train`` refuses a command that differs from it).
    """
    if resume_request(resume) is not False and (Path(output_dir) / CONFIG_FILE).is_file():
        return None
    return str(CONFIG_FILE.parent)


def _leaves(config: Any, prefix: str = "") -> dict[str, Any]:
    """'a.b.c' -> value of every leaf (lists are leaves), interpolations as written."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=False)
    if not isinstance(config, Mapping) or not config:
        return {prefix: config}
    leaves: dict[str, Any] = {}
    for name, value in config.items():
        leaves.update(_leaves(value, f"{prefix}.{name}" if prefix else str(name)))
    return leaves


def run_differences(saved: DictConfig | Mapping, current: DictConfig, typed: Sequence[str]) -> list[str]:
    """What this command's config (``current``) changes of a run's saved one, as ``key: saved -> now``.

    Apart from ``NOT_THE_RUN`` and a larger ``trainer.max_epochs``. A setting only one of them has
    (a key added to the project's configs since, or a test-only callback) counts only where this
    command set it (``typed``: its overrides).
    """
    before, now = _leaves(saved), _leaves(current)
    set_here = {_key(o) for o in typed}
    differences = []

    def typed_here(key: str) -> bool:
        return any(key == k or key.startswith(f"{k}.") for k in set_here)

    # What this command set first: the differences it means to make, before those of the defaults it left.
    for key in sorted(before.keys() | now.keys(), key=lambda k: (not typed_here(k), k)):
        if key in NOT_THE_RUN or key.split(".", 1)[0] in NOT_THE_RUN:
            continue
        if key == MORE_ALLOWED and isinstance(before.get(key), int) and isinstance(now.get(key), int):
            if now[key] >= before[key]:
                continue
        elif (key not in before or key not in now) and not typed_here(key):
            continue
        if before.get(key, "(not set)") != now.get(key, "(not set)"):
            differences.append(f"{key}: {before.get(key, '(not set)')} -> {now.get(key, '(not set)')}")
    return differences


def register() -> None:
    for name, resolver in (("sepdense.run_dir", run_dir), ("sepdense.job_name", job_name),
                           ("sepdense.saved_config_dir", saved_config_dir)):  # fmt: skip
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("sepdense.sweep_dir"):
        OmegaConf.register_new_resolver("sepdense.sweep_dir", sweep_dir, use_cache=True)
