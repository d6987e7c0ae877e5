"""Publishing a finished study: its complete runs' results, without checkpoints, in a folder small enough for git,
from which ``python -m sepdense.report <folder>`` rebuilds the same report."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from sepdense.models import CONV_TYPES
from sepdense.runs import (
    CONFIG_FILE,
    CONFUSION_FILE,
    ENVIRONMENT_FILE,
    METRICS_FILE,
    MULTIRUN_FILE,
    OVERRIDES_FILE,
    PREDICTIONS_FILE,
    TENSORBOARD_DIR,
    find_run_dirs,
    load_run,
    sweep_plan,
    unstarted_jobs,
)

# What a published run keeps: its config, results and curves (TensorBoard events); never checkpoints or logs.
RUN_FILES = (CONFIG_FILE, OVERRIDES_FILE, METRICS_FILE, CONFUSION_FILE, PREDICTIONS_FILE, ENVIRONMENT_FILE)


def publish(sweep: Path, destination: Path) -> list[Path]:
    """Copy the complete runs of ``sweep`` into ``destination/<conv>-seed<seed>/``; refuses when a run is not
    complete (a number from an unfinished run is not a result) or ``destination`` already holds runs."""
    runs = [load_run(path, sweep) for path in find_run_dirs(sweep)]
    if not runs:
        raise FileNotFoundError(f"{sweep} holds no runs (no .hydra/config.yaml below it).")
    unfinished = [f"{r.name} ({r.status})" for r in runs if not r.complete]
    unfinished += [f"{job} (not started)" for job in unstarted_jobs(sweep) or []]
    if unfinished:
        raise ValueError(f"not every run is complete, so nothing was published: {'; '.join(unfinished)}.")
    if destination.exists() and find_run_dirs(destination):
        raise ValueError(f"{destination} already holds published runs; remove it first to publish again.")
    published = []
    for run in runs:
        if run.conv not in CONV_TYPES or not isinstance(run.seed, int):
            raise ValueError(f"{run.name} has conv type {run.conv!r} and seed {run.seed!r}: not a study run.")
        target = destination / f"{run.conv}-seed{run.seed}"
        if target.exists():
            raise ValueError(f"two runs of {run.conv} with seed {run.seed} in {sweep}: publish one sweep at a time.")
        for name in RUN_FILES:
            if (run.path / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run.path / name, target / name)
        for events in sorted((run.path / TENSORBOARD_DIR).rglob("events.out.tfevents.*")):
            copied = target / TENSORBOARD_DIR / events.relative_to(run.path / TENSORBOARD_DIR)
            copied.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(events, copied)
        published.append(target)
    plan = sweep_plan(sweep)
    if plan is not None:  # the sweep's plan (not its whole multirun.yaml): the published report counts its jobs
        (destination / MULTIRUN_FILE).write_text(yaml.safe_dump(plan, sort_keys=False))
    return published
