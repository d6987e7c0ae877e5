"""Experiment trackers (TensorBoard, CSV, MLflow, W&B): built from ``conf/logger``, given each run's config and results.

Every tracker gets the same metric names and curves from Lightning; this module adds what Lightning
does not: the run's config, its one-number results, MLflow artifacts, and on resume the same tracker run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams
from torch.utils.tensorboard.writer import FileWriter

from sepdense.checkpoints import load_checkpoint
from sepdense.errors import ConfigError
from sepdense.runs import (
    CONFIG_FILE,
    CONFUSION_FILE,
    ENVIRONMENT_FILE,
    LOG_FILE,
    METRICS_FILE,
    OVERRIDES_FILE,
    PREDICTIONS_FILE,
    REPORT_DIR,
)

log = logging.getLogger(__name__)
# The one-number summary of a run (TensorBoard's HPARAMS tab, the CSV logger's summary.csv): the values
# that tell runs apart and the recipe (the whole config is in .hydra/config.yaml), the measured size,
# and the final values of curves already logged.
HPARAMS_FIRST = ("model.conv", "seed")
HPARAMS_RECIPE = ("data.batch_size", "model.block_config", "model.growth_rate", "model.bottleneck",
                  "model.separable_mid_norm", "model.stem", "optimizer.lr", "optimizer.weight_decay",
                  "trainer.max_epochs", "trainer.precision", "module.label_smoothing", "module.channels_last",
                  "module.compile", "module.cuda_graph")  # fmt: skip
HPARAMS_MEASURED = ("model/params", "model/macs", "model/latency_b1_ms", "time/fit_s")
HPARAMS_METRICS = ("test/acc", "test/f1", "val/acc", "time/train_images_per_s")
# The tracker runs of this run directory (MLflow run id and store, W&B run id), so a resume continues them.
TRACKERS_FILE = "trackers.json"
CSV_SUMMARY_FILE = "summary.csv"
# The run directory's files an MLflow run holds as artifacts (the report follows once it is written).
MLFLOW_ARTIFACTS = (METRICS_FILE, CONFUSION_FILE, PREDICTIONS_FILE, ENVIRONMENT_FILE, LOG_FILE, CONFIG_FILE,
                    OVERRIDES_FILE)  # fmt: skip
# Logger class -> (the module it imports, the extra that installs it).
REQUIRES = {"MLFlowLogger": ("mlflow", "mlflow"), "WandbLogger": ("wandb", "wandb")}


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config to 'a.b.c' keys (as on the command line) with TensorBoard-friendly values."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's whole config as flat 'a.b.c' keys, the values every tracker shows as parameters."""
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def summary_values(cfg: DictConfig, metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """One row per run: conv type and seed, the recipe, the data source and the measured size; and the final metrics."""
    config = run_config(cfg)
    values = {k: config[k] for k in (*HPARAMS_FIRST, *HPARAMS_RECIPE) if k in config}
    values["data.source"] = str(OmegaConf.select(cfg, "data.source._target_", default="?")).rsplit(".", 1)[-1]
    values |= {k.replace("/", "."): metrics[k] for k in HPARAMS_MEASURED if k in metrics}
    values = {k: v if v is not None else "null" for k, v in values.items()}
    return values, {k: metrics.get(k, 0.0) for k in HPARAMS_METRICS}


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def require_library(target: str) -> None:
    """Stop before training, in one line, when the chosen logger's library is not installed."""
    kind = target.rsplit(".", 1)[-1]
    if kind in REQUIRES and importlib.util.find_spec(REQUIRES[kind][0]) is None:
        module, extra = REQUIRES[kind]
        raise ConfigError(
            f"logger={module} needs the {module} package, which is not installed: pip install 'sepdense[{extra}]' "
            f"(or pip install {module}), or choose another logger (logger=tensorboard, csv)."
        )


def read_trackers(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / TRACKERS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def build_loggers(cfg: DictConfig, ckpt_path: str | None) -> list[Logger]:
    """The configured loggers, each shown the run's config; resuming, each continues where the checkpoint stands.

    TensorBoard and the CSV file hide what the interrupted run logged after the checkpoint (those
    steps are trained again); MLflow and W&B continue the tracker run of this run directory.
    """
    nodes = [n for n in (cfg.get("logger") or {}).values() if isinstance(n, DictConfig) and "_target_" in n]
    for node in nodes:
        require_library(node._target_)
    output_dir = Path(cfg.paths.output_dir)
    # A resume continues this directory's tracker runs; a new run from another run's checkpoint starts its own.
    saved = read_trackers(output_dir) if ckpt_path else {}
    # A checkpoint at global step G holds what was logged at steps below G (a step's values are logged at its
    # 0-based index, an epoch's at its last step); the resumed run logs again from G. Memory-mapped: only the
    # step counter is read here; Lightning loads the whole checkpoint later.
    purge_step = load_checkpoint(ckpt_path, mmap=True)["global_step"] if ckpt_path else None
    loggers: list[Logger] = []
    for node in nodes:
        kind = node._target_.rsplit(".", 1)[-1]
        kwargs: dict[str, Any] = {}
        if kind == "TensorBoardLogger" and purge_step is not None:
            kwargs["purge_step"] = purge_step
        elif kind == "MLFlowLogger":
            kwargs = _mlflow_arguments(node, output_dir, saved.get("mlflow", {}))
        elif kind == "WandbLogger":
            # A new run's id comes from W&B (recorded by _start); a resumed one's from the run directory.
            run_id = saved.get("wandb", {}).get("id") or node.get("id")
            kwargs = {"id": run_id, "name": node.get("name") or output_dir.name}
        logger = hydra.utils.instantiate(node, **kwargs)
        if isinstance(logger, CSVLogger) and purge_step is not None:
            _keep_csv_rows(logger, purge_step)
        loggers.append(logger)
    if rank_zero_only.rank == 0:
        _start(loggers, cfg, output_dir, saved)
    return loggers


def _mlflow_arguments(node: DictConfig, output_dir: Path, saved: dict[str, Any]) -> dict[str, Any]:
    """A tracking URI (the configured server, or a SQLite store in the run directory) and the run to continue.

    The URI comes from the config, never from the run directory's trackers.json: a directory someone
    hands us must not choose where this run's metrics and files are sent. The saved run id is used
    only when it was saved for that same store.
    """
    uri = mlflow_uri(node, output_dir)
    if not node.get("tracking_uri"):
        store = local_mlflow_store(node, output_dir)
        store.mkdir(parents=True, exist_ok=True)
        if rank_zero_only.rank == 0:  # DDP's other ranks log nothing, and must not race to create the store
            _create_local_experiment(uri, node.experiment_name, store / "artifacts")
    run_id = saved.get("run_id") if saved.get("tracking_uri") == uri else None
    return {"tracking_uri": uri, "run_id": run_id, "run_name": node.get("run_name") or output_dir.name}


def local_mlflow_store(node: DictConfig, output_dir: Path) -> Path:
    return Path(node.get("save_dir") or Path(output_dir) / "mlflow").resolve()


def mlflow_uri(node: DictConfig, output_dir: Path) -> str:
    """Where a run's MLflow records go: the configured server, or a SQLite store in the run directory."""
    return node.get("tracking_uri") or f"sqlite:///{local_mlflow_store(node, output_dir) / 'mlflow.db'}"


def _create_local_experiment(uri: str, name: str, artifacts: Path) -> None:
    # The store holds this run directory's runs only, so its artifacts live beside it; a server picks its own.
    from mlflow.tracking import MlflowClient

    for noisy in ("mlflow", "alembic"):  # creating the store's tables logs each migration step
        logging.getLogger(noisy).setLevel(logging.WARNING)
    client = MlflowClient(uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=artifacts.as_uri())


def _keep_csv_rows(logger: CSVLogger, purge_step: int) -> None:
    """Carry the interrupted run's rows before ``purge_step`` into the file Lightning starts afresh on resume."""
    path = Path(logger.log_dir) / "metrics.csv"
    rows = list(csv.DictReader(path.open())) if path.is_file() else []
    with warnings.catch_warnings():  # Lightning's notice that the old file goes: its rows are carried over here
        warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted")
        writer = logger.experiment  # opening it removes the old file; the rows are written again on the next save
    for row in rows:
        step = int(row.pop("step"))
        if step < purge_step:
            writer.log_metrics({k: float(v) for k, v in row.items() if v != ""}, step)


def _start(loggers: list[Logger], cfg: DictConfig, output_dir: Path, saved: dict[str, Any]) -> None:
    """Show each tracker that keeps parameters the run's config, and record its run for a resume."""
    trackers = dict(saved)
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            _log_mlflow_params(logger, run_config(cfg))
            trackers["mlflow"] = {"run_id": logger.run_id, "tracking_uri": logger.experiment.tracking_uri}
        elif isinstance(logger, WandbLogger):
            logger.experiment.config.update(run_config(cfg), allow_val_change=True)
            trackers["wandb"] = {"id": logger.experiment.id, "project": logger.experiment.project}
    if trackers:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / TRACKERS_FILE).write_text(json.dumps(trackers, indent=2) + "\n")


def _log_mlflow_params(logger: MLFlowLogger, params: dict[str, Any]) -> None:
    # MLflow refuses to change a logged parameter: a resumed run keeps the values it started with.
    logged = logger.experiment.get_run(logger.run_id).data.params
    changed = sorted(k for k, v in params.items() if k in logged and logged[k] != str(v)[:250])
    if changed:
        log.warning("MLflow keeps the parameters this run started with; changed on resume: %s", ", ".join(changed))
    logger.log_hyperparams({k: v for k, v in params.items() if k not in logged})


def finish_tracking(loggers: Iterable[Logger], cfg: DictConfig, metrics: dict[str, Any], output_dir: Path) -> None:
    """After testing: each tracker gets the run's one-number results (and MLflow the run's files), then closes."""
    values, finals = summary_values(cfg, metrics)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            write_hparams(logger.log_dir, values, finals)
        elif isinstance(logger, CSVLogger):
            _write_csv_summary(Path(logger.log_dir) / CSV_SUMMARY_FILE, values | finals)
        elif isinstance(logger, MLFlowLogger):
            # The figures whose latest value is not the final one (model size, fit time, best score; all of them
            # after a resume); the curves already end there.
            latest = logger.experiment.get_run(logger.run_id).data.metrics
            logger.log_metrics({k: v for k, v in numbers(metrics).items() if latest.get(k) != v})
            for name in MLFLOW_ARTIFACTS:
                folder = Path(name).parent.as_posix()  # .hydra/config.yaml stays under .hydra/
                if (output_dir / name).is_file():
                    where = None if folder == "." else folder
                    logger.experiment.log_artifact(logger.run_id, str(output_dir / name), where)
        elif isinstance(logger, WandbLogger):
            logger.experiment.summary.update(numbers(metrics))
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def write_hparams(log_dir: str | Path, values: dict[str, Any], finals: dict[str, float]) -> None:
    """TensorBoard's HPARAMS tab: one row per run, the values of ``HPARAMS_FIRST`` as its first columns.

    Written as its own event file (not through ``log_hyperparams``, which would log each metric again
    as a one-point curve at step 0); the tab reads the metrics' last values from their curves.
    """
    experiment, start, end = hparams(hparams_display(values), finals)
    writer = FileWriter(str(log_dir))
    for summary in (mark_differs(experiment, HPARAMS_FIRST), start, end):
        writer.add_summary(summary)
    writer.close()


def hparams_display(values: dict[str, Any]) -> dict[str, Any]:
    """Settings that are integers or booleans as text, so HPARAMS shows them as such.

    TensorBoard prints every number with 5 significant digits (seed 0 as ``0.0000``; torch writes a
    bool as the number 1 or 0). Measured figures (``HPARAMS_MEASURED``) stay numbers, so that the
    tab can plot them against accuracy.
    """
    measured = {key.replace("/", ".") for key in HPARAMS_MEASURED}
    return {k: v if k in measured or not isinstance(v, int) else str(v).lower() for k, v in values.items()}


def mark_differs(experiment: Summary, names: Iterable[str]) -> Summary:
    """The experiment summary with ``names`` marked as differing between runs.

    TensorBoard shows columns with ``differs`` set first, then by name, and the first five by default;
    no public API sets the flag, so it is set here in the plugin's own protobuf (tested against
    TensorBoard's reader).
    """
    data = HParamsPluginData.FromString(experiment.value[0].metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in set(names)
    experiment.value[0].metadata.plugin_data.content = data.SerializeToString()
    return experiment


def _write_csv_summary(path: Path, row: dict[str, Any]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)


def log_report(run_dir: Path, loggers: DictConfig | None) -> None:
    """Add the run's report (written after training, by the Hydra callback) to its MLflow run, if ``loggers`` (the
    run's logger config) tracks it in MLflow.

    The store is the one the config chooses (as for training); the run directory's trackers.json only
    names the run in it, and only when it was recorded for that same store.
    """
    node = next((n for n in (loggers or {}).values() if isinstance(n, DictConfig)
                 and str(n.get("_target_", "")).endswith("MLFlowLogger")), None)  # fmt: skip
    report = Path(run_dir) / REPORT_DIR
    if node is None or not report.is_dir():
        return
    uri, saved = mlflow_uri(node, Path(run_dir)), read_trackers(run_dir).get("mlflow", {})
    if saved.get("tracking_uri") != uri or not saved.get("run_id"):
        return
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).log_artifacts(saved["run_id"], str(report), REPORT_DIR)


def log_figure(logger: Logger, tag: str, figure: Any, step: int) -> None:
    """Add a matplotlib figure to a tracker that holds images (all but the CSV file)."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_figure(tag, figure, global_step=step, close=False)
    elif isinstance(logger, MLFlowLogger):
        logger.experiment.log_figure(logger.run_id, figure, f"{tag}/step_{step:07d}.png")
    elif isinstance(logger, WandbLogger):
        logger.log_image(tag, [figure], step=step)
