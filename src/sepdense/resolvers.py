"""OmegaConf resolvers used by the configs; registered when the entry points import this module."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from sepdense.runs import OVERRIDES_FILE, is_run_dir, last_checkpoint

RESUME_KEY = "resume"


def _without_resume(overrides: Sequence[str]) -> list[str]:
    return sorted(str(o) for o in overrides if not str(o).lstrip("+~").startswith(f"{RESUME_KEY}="))


def run_dir(resume: object, runs_dir: str, new_dir: str, overrides: Sequence[str]) -> str:
    """The directory of a single run: ``new_dir`` normally; the run to continue when resuming.

    ``resume=<run dir>`` continues that run. ``resume=true`` continues the most recent run under
    ``runs_dir`` started with the same overrides (apart from ``resume``) that has a last.ckpt,
    and starts a new run in ``new_dir`` when there is none. A ``resume`` path that is not a run
    directory also gets ``new_dir``, where training stops with a clear error (see ``train``):
    raising here would surface as a traceback from inside Hydra.
    """
    if resume in (None, False, "false", "False"):
        return new_dir
    if resume not in (True, "true", "True"):
        return str(resume) if is_run_dir(Path(str(resume))) else new_dir
    wanted = _without_resume(overrides)
    for saved in sorted(Path(runs_dir).glob(f"*/{OVERRIDES_FILE}"), reverse=True):
        candidate = saved.parent.parent
        if last_checkpoint(candidate).is_file() and _without_resume(OmegaConf.load(saved)) == wanted:
            return str(candidate)
    return new_dir


def register() -> None:
    if not OmegaConf.has_resolver("sepdense.run_dir"):
        OmegaConf.register_new_resolver("sepdense.run_dir", run_dir)
