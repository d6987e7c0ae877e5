"""The run directory as a contract: what a training run writes there, and how anyone reads it back.

Training writes through the ``write_*`` functions; the report, the evaluation entry point and
resuming read through ``load_run``, ``find_run_dirs`` and the file names defined here, so the
layout of a run directory is stated in one place.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf

from sepdense.stopping import EXTENDED, FAILURE, is_complete
from sepdense.tables import write_json

CONFIG_FILE = Path(".hydra") / "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.json"
PREDICTIONS_FILE = "test_predictions.npz"
ENVIRONMENT_FILE = "environment.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
TENSORBOARD_DIR = "tensorboard"
# What Hydra saves in a sweep's directory: the sweep's config and command (rewritten by each resume=true).
MULTIRUN_FILE = "multirun.yaml"
REPORT_DIR = "report"
LOG_FILE = "train.log"
# The folders a run (its loggers, Hydra) writes into.
RUN_FOLDERS = (CONFIG_FILE.parent.name, TENSORBOARD_DIR, CHECKPOINT_DIR, "csv", "mlflow", "wandb")
# What test predictions say about the data they were made on (see write_predictions).
DATA_IDENTITY = ("data_source", "test_fingerprint")
# Per-epoch scalars that make the learning curves.
CURVES = ("train/loss", "val/loss", "train/acc", "val/acc")
# Per-epoch costs, which the report sums up over all epochs rather than take from the last one.
COST_CURVES = ("time/train_epoch_s", "time/train_images_per_s", "memory/peak_mb")


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories at or below ``root``: those with a Hydra ``.hydra/config.yaml``."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    return sorted(p.parent.parent for p in root.glob(f"**/{CONFIG_FILE}") if REPORT_DIR not in p.parts)


def has_results(run_dir: Path) -> bool:
    """Whether a run saved anything worth keeping: a checkpoint or a logged metric."""
    run_dir = Path(run_dir)
    if any((run_dir / CHECKPOINT_DIR).glob("*.ckpt")):
        return True
    return (run_dir / TENSORBOARD_DIR).is_dir() and bool(read_curves(run_dir / TENSORBOARD_DIR, tags=None))


def contents(run_dir: Path) -> set[Path]:
    """What is in a run directory now: its entries, and what is inside those of them a run writes into.

    Taken when a run starts, so that a failed start removes only what it added (``remove_run_without_results``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return set()
    entries = set(run_dir.iterdir())
    return entries.union(*(set(p.rglob("*")) for p in entries if p.name in RUN_FOLDERS and p.is_dir()))


def remove_run_without_results(run_dir: Path, before: set[Path]) -> None:
    """After a start that failed before saving results: delete what this run added, then the directory if empty.

    ``before``: ``contents(run_dir)`` when the run started. Hydra's config and log (written just before)
    go only where the directory held nothing else then: Hydra made it for this run. A directory that
    held anything (``hydra.run.dir`` pointing at someone's folder, with their ``checkpoints/``) keeps all
    of it, folders included. Nothing happens where results exist.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or has_results(run_dir):
        return
    made_for_this_run = all(p.parent == run_dir and (p.name == CONFIG_FILE.parent.name or p.suffix == ".log")
                            for p in before if p.parent == run_dir)  # fmt: skip
    added = [p for p in contents(run_dir) if made_for_this_run or p not in before]
    for path in sorted(added, key=lambda p: len(p.parts), reverse=True):  # what is inside a folder first
        if not path.is_dir() or path.is_symlink():
            path.unlink(missing_ok=True)
        elif path.parent == run_dir and path not in before:
            shutil.rmtree(path, ignore_errors=True)  # a folder this run made, with all in it
        else:
            with contextlib.suppress(OSError):
                path.rmdir()  # emptied of what this run added to it
    if made_for_this_run:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only if nothing else is in it


def failed_runs(root: Path) -> list[tuple[str, str]]:
    """(name, reason) of every run at or below ``root`` whose metrics.json records that it failed."""
    failed = []
    for run_dir in find_run_dirs(root):
        with contextlib.suppress(OSError, ValueError):
            reason = json.loads((run_dir / METRICS_FILE).read_text()).get(FAILURE)
            if reason:
                failed.append((run_dir.name, str(reason)))
    return failed


def stopped_runs(root: Path, by: tuple[str, ...] = ("time_limit", "signal"), unrecorded: bool = True) -> list[str]:
    """Names of the runs at or below ``root`` that the time limit or a signal stopped (``by``: which of the two), and
    (``unrecorded``) those that never saved a record (not started, or killed); read from each metrics.json, as
    ``failed_runs`` is."""
    stopped = []
    for run_dir in find_run_dirs(root):
        try:
            record = json.loads((run_dir / METRICS_FILE).read_text())
        except (OSError, ValueError):
            if unrecorded:
                stopped.append(run_dir.name)
            continue
        if isinstance(record, dict) and not is_complete(record) and record.get("stopped_by") in by:
            stopped.append(run_dir.name)
    return stopped


# More planned jobs than this (a sweep over ranges) are not listed: the report cannot name them usefully, and a few
# bytes of multirun.yaml could otherwise ask for millions.
MAX_PLANNED_JOBS = 10_000


def sweep_plan(sweep_dir: Path) -> dict[str, Any] | None:
    """What of a sweep's multirun.yaml says which jobs it plans (``hydra.sweeper`` and the command line's
    ``hydra.overrides.task``), or None where there is none to read: no such file, a link, not what Hydra writes."""
    path = Path(sweep_dir) / MULTIRUN_FILE
    if path.is_symlink() or not path.is_file():
        return None
    try:  # a file handed to us is data: read as plain YAML, nothing resolved
        hydra = yaml.safe_load(path.read_text())["hydra"]
        sweeper, task = hydra["sweeper"], hydra["overrides"]["task"]
        plan = {"_target_": str(sweeper["_target_"]), "params": dict(sweeper.get("params") or {})}
        return {"hydra": {"sweeper": plan, "overrides": {"task": [str(override) for override in task]}}}
    except Exception:
        return None


def planned_jobs(sweep_dir: Path) -> list[tuple[str, ...]] | None:
    """The jobs a sweep's command plans, each as the overrides that tell it apart ("key=value"), read from the
    multirun.yaml Hydra saved in the sweep's directory, as Hydra's basic sweeper lists them (the sweeper's params,
    then the command line's, the later of a key winning). None where that cannot be told: no plan (``sweep_plan``),
    another sweeper (Optuna's trials are not known ahead), a sweep that only the config can list (``glob``), or
    more than ``MAX_PLANNED_JOBS``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plan = sweep_plan(sweep_dir)
    if plan is None or not plan["hydra"]["sweeper"]["_target_"].endswith(".BasicSweeper"):
        return None
    given = [f"{key}={value}" for key, value in plan["hydra"]["sweeper"]["params"].items()]
    given += plan["hydra"]["overrides"]["task"]
    swept: dict[str, list[str]] = {}
    try:  # parsed by Hydra's override grammar (values and sweeps, no code)
        for override in OverridesParser.create().parse_overrides(given):
            key = override.get_key_element()
            swept.pop(key, None)
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    return None
                values = list(itertools.islice(override.sweep_string_iterator(), MAX_PLANNED_JOBS + 1))
                swept[key] = [f"{key}={value}" for value in values]
    except Exception:  # not what Hydra's grammar reads: not known
        return None
    if not swept or math.prod(len(values) for values in swept.values()) > MAX_PLANNED_JOBS:
        return None
    return [tuple(job) for job in itertools.product(*swept.values())]


def unstarted_jobs(sweep_dir: Path) -> list[str] | None:
    """The planned jobs of a sweep (``planned_jobs``) that have no run directory in it yet, e.g. "model.conv=separable,
    seed=1" of a study stopped by its time limit before joblib started them; None where that cannot be told."""
    planned = planned_jobs(sweep_dir)
    if planned is None:
        return None
    started = []
    for run_dir in find_run_dirs(sweep_dir):
        try:
            overrides = yaml.safe_load((run_dir / OVERRIDES_FILE).read_text())
        except (OSError, yaml.YAMLError):
            return None  # a run whose job is unknown: which planned ones it stands for cannot be told
        if not isinstance(overrides, list):
            return None
        started.append({str(override) for override in overrides})
    return [",".join(job) for job in planned if not any(set(job) <= overrides for overrides in started)]


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def write_environment(run_dir: Path, environment: dict[str, Any]) -> None:
    """The machine and package versions (``sepdense.measure.environment()``) beside the run's results."""
    write_json(Path(run_dir) / ENVIRONMENT_FILE, environment)


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json(Path(run_dir) / METRICS_FILE, metrics, sort_keys=True)


def write_confusion(run_dir: Path, class_names: list[str], matrix: list[list[int]]) -> None:
    write_json(Path(run_dir) / CONFUSION_FILE, {"class_names": list(class_names), "matrix": matrix})


def write_predictions(run_dir: Path, predictions: dict[str, Any], class_names: list[str]) -> None:
    """Per test image: ``index`` (its position in the source's test split), ``label``, ``pred`` and ``logits``.

    Compressed, logits in float16 (about 0.2 MB for CIFAR-10's 10,000 test images): enough to pair
    runs image by image (McNemar's test, bootstrap intervals) without re-running anything. With them,
    when ``predictions`` has them: ``data_source`` (the source's kind and settings) and
    ``test_fingerprint`` (sha1 of the whole test split's images and labels), which say whether two
    runs were tested on the same data.
    """
    logits = np.asarray(predictions["logits"], dtype=np.float32)
    data = {key: np.array(str(predictions[key])) for key in DATA_IDENTITY if key in predictions}
    np.savez_compressed(
        Path(run_dir) / PREDICTIONS_FILE,
        index=np.asarray(predictions["index"], dtype=np.int64),
        label=np.asarray(predictions["label"], dtype=np.int64),
        pred=logits.argmax(1),
        logits=logits.astype(np.float16),
        class_names=np.array(class_names),
        **data,
    )


def read_predictions(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The test predictions of a run (see ``write_predictions``), or None if it saved none."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:  # a file handed to us is data: no pickled objects
        return {name: saved[name] for name in saved.files}


def read_config(run_dir: Path) -> DictConfig:
    return OmegaConf.load(Path(run_dir) / CONFIG_FILE)


@dataclass
class Run:
    """What one run left on disk."""

    path: Path
    name: str
    conv: str = "?"
    seed: int | None = None
    status: str = "complete"
    # From metrics.json (None in runs saved before these keys existed); stopped_by: max_epochs, early_stopping,
    # time_limit or signal.
    epochs_done: int | None = None
    epochs_planned: int | None = None
    stopped_by: str | None = None
    config: DictConfig | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    confusion: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    predictions: dict[str, np.ndarray] | None = None

    @property
    def complete(self) -> bool:
        """Finished by its own rule (all epochs, or early stopping): the only runs a report compares."""
        return self.status.startswith("complete")

    @property
    def progress(self) -> str:
        """'e/E epochs' (epochs done of planned), or '' where the run does not say."""
        if self.epochs_done is None:
            return ""
        return f"{self.epochs_done}/{self.epochs_planned if self.epochs_planned is not None else '?'} epochs"

    def test_data(self, key: str) -> str | None:
        """``data_source`` or ``test_fingerprint`` saved with the test predictions; None for runs saved without."""
        if self.predictions is None or key not in self.predictions:
            return None
        return str(self.predictions[key])


def read_curves(event_dir: Path, tags: tuple[str, ...] | None = CURVES) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch values of ``tags`` (None: every scalar), as (epoch, value), read with TensorBoard's event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # It reports every event file it opens, and warns of "out of order" steps where a resumed run purged what
    # its cut process had logged after the checkpoint: expected, and handled (the purged points are not read).
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    events = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    events.Reload()
    available = set(events.Tags().get("scalars", []))
    # Lightning logs the epoch beside every epoch-level metric, at the same global step.
    epoch_at = {e.step: int(e.value) for e in events.Scalars("epoch")} if "epoch" in available else {}
    curves = {}
    for tag in available if tags is None else tags:
        if tag in available:
            points = {epoch_at.get(e.step, i): e.value for i, e in enumerate(events.Scalars(tag))}
            curves[tag] = sorted(points.items())  # a resumed epoch keeps its last value
    return curves


def load_run(path: Path, root: Path | None = None) -> Run:
    """Read a run directory; a run that crashed or left unreadable files gets a status saying so."""
    path = Path(path)
    root = Path(root) if root is not None else path
    run = Run(path=path, name=str(path.relative_to(root)) if path != root else path.name)
    try:
        run.config = read_config(path)
        run.conv = str(OmegaConf.select(run.config, "model.conv", default="?"))
        run.seed = OmegaConf.select(run.config, "seed", default=None)
        if (path / TENSORBOARD_DIR).is_dir():
            run.curves = read_curves(path / TENSORBOARD_DIR, tags=(*CURVES, *COST_CURVES))
        if not (path / METRICS_FILE).is_file():
            # Killed or still running: the epochs it has validated so far, of those its config plans.
            run.epochs_done = len(run.curves.get("val/acc", []))
            run.epochs_planned = OmegaConf.select(run.config, "trainer.max_epochs", default=None)
            run.status = "incomplete (no metrics.json: crashed or still running)"
            return run
        run.metrics = json.loads((path / METRICS_FILE).read_text())
        run.epochs_done, run.epochs_planned = run.metrics.get("epochs_done"), run.metrics.get("epochs_planned")
        run.stopped_by = run.metrics.get("stopped_by")
        # Saved before `complete` was recorded: complete. Early stopping ends a run by its own rule: complete too.
        if run.metrics.get(FAILURE):
            run.status = f"failed ({run.metrics[FAILURE]})"
        elif not is_complete(run.metrics):
            done = f"{run.progress} done; " if run.progress else ""
            run.status = f"in progress ({done}stopped by {run.stopped_by or 'an interruption'})"
        elif run.stopped_by == "early_stopping":
            run.status = f"complete (early stopping after {run.progress}: complete by its own rule)"
        elif run.metrics.get(EXTENDED):
            run.status = f"complete (extended: planned for {run.metrics[EXTENDED]} epochs, continued to {run.progress})"
        if (path / CONFUSION_FILE).is_file():
            saved = json.loads((path / CONFUSION_FILE).read_text())
            run.confusion, run.class_names = np.array(saved["matrix"]), list(saved["class_names"])
        run.predictions = read_predictions(path)
    except Exception as err:  # one unreadable run must not sink the report of the others
        run.status = f"broken ({type(err).__name__}: {err})"
    return run
