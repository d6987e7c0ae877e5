"""Which runs are seeds of one experiment: runs group when their whole config agrees, apart from the seed (and
what follows it), paths, and settings that cannot change a result; the conv type is the report's own column.

Runs that differ in anything else (``optimizer.lr``, ``trainer.max_epochs``, a width) are reported apart and
never pooled as seeds; the report names the settings that differ.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sepdense.report.aggregate import natural_key
from sepdense.runs import Run

# Settings that cannot change what a run measures: where it writes, what it logs and prints, how it is resumed
# or stopped, and which metric a search optimises. A value that refers to one of them (a checkpoint folder under
# ``${paths.output_dir}``, a data seed ``${seed}``) goes with it. ``model.conv`` is the report's column, and the
# data source is summed up as ``data`` (its kind and file name; see ``dataset``).
IGNORED = (
    "seed", "paths", "hydra", "logger", "task_name", "resume", "ckpt_path", "time_limit", "test", "optimized_metric",
    "model.conv", "data.source._target_", "data.source.root",
    "trainer.default_root_dir", "trainer.log_every_n_steps", "trainer.enable_model_summary",
    "trainer.enable_progress_bar", "callbacks.progress_bar", "callbacks.epoch_log", "callbacks.lr_monitor",
    "callbacks.confusion_matrix", "callbacks.interruption", "callbacks.last_metrics", "callbacks.time_limit",
    "callbacks.last_checkpoint", "callbacks.model_checkpoint.dirpath", "callbacks.model_checkpoint.filename",
)  # fmt: skip
REFERENCE = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")  # ${a.b}: a plain reference to another key (not a resolver)
ABSENT = "(absent)"


def ignored(key: str) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in IGNORED)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}{key}.")
        return out or {prefix[:-1]: "{}"}
    return {prefix[:-1]: value}


def _resolve(key: str, flat: dict[str, Any], depth: int = 0) -> str | None:
    """The value of ``key`` as text with plain references substituted; None when it refers to an ignored setting.

    Only references are followed (no resolver runs: a config handed to the report is data, not code); a resolver
    call such as ``${oc.env:X}`` stays as written, which is equal between runs of one recipe.
    """
    value = flat.get(key, ABSENT)
    if not isinstance(value, str):
        return json.dumps(value) if isinstance(value, list | dict) else str(value)
    for reference in REFERENCE.findall(value):
        if ignored(reference) or depth > 8:
            return None
        referenced = _resolve(reference, flat, depth + 1)
        if referenced is None:
            return None
        value = value.replace(f"${{{reference}}}", referenced)
    return value


def dataset(run: Run) -> str:
    """Which data a run used, from its config: the source's kind and, for files, the folder or archive name."""
    config = OmegaConf.to_container(run.config, resolve=False) if run.config is not None else {}
    source = (config.get("data") or {}).get("source")
    if not isinstance(source, dict):
        return "?"
    kind = str(source.get("_target_", "?")).rsplit(".", 1)[-1]
    root = source.get("root")  # as saved, unresolved: its last part names the folder or archive either way
    return f"{kind}:{Path(str(root)).name}" if root else kind


def run_precision(run: Run) -> str:
    """The precision a run trained in: recorded in metrics.json, else its config's setting (older runs)."""
    recorded = run.metrics.get("precision")
    if recorded is None and run.config is not None:
        recorded = OmegaConf.select(run.config, "trainer.precision", default=None)
    return str(recorded) if recorded is not None else "?"


def recipe(run: Run) -> dict[str, str]:
    """Everything in a run's config that can change its result, as ``{dotted key: value}``, with ``data`` and the
    precision it trained in (``precision=auto`` resolves per machine)."""
    container = OmegaConf.to_container(run.config, resolve=False) if run.config is not None else {}
    flat = _flatten(container)
    settings = {key: _resolve(key, flat) for key in flat if not ignored(key)}
    kept = {key: value for key, value in settings.items() if value is not None}
    return {**kept, "data": dataset(run), "precision": run_precision(run)}


def varying_settings(runs: list[Run]) -> list[str]:
    """The settings whose values differ between ``runs`` (the conv type and seed apart), in natural order."""
    recipes = [recipe(r) for r in runs]
    keys = sorted({k for s in recipes for k in s})
    return [k for k in keys if len({s.get(k, ABSENT) for s in recipes}) > 1]


def setting_label(run: Run, keys: list[str]) -> str:
    """The run's values of ``keys``, as overrides: ``optimizer.lr=0.1, trainer.max_epochs=100``."""
    settings = recipe(run)
    return ", ".join(f"{k}={settings.get(k, ABSENT)}" for k in keys)


def differences(runs: list[Run], keys: list[str]) -> str:
    """'optimizer.lr (0.01, 0.1), trainer.max_epochs (10, 100)': each varying setting with the values it takes."""
    recipes = [recipe(r) for r in runs]
    return ", ".join(f"{k} ({', '.join(sorted({s.get(k, ABSENT) for s in recipes}, key=natural_key))})" for k in keys)
