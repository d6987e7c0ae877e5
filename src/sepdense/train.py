"""Training: build everything from the Hydra config, fit, test the best checkpoint, return the metrics."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams

from sepdense.callbacks import SummaryCallback
from sepdense.checkpoints import load_checkpoint
from sepdense.cli import find_user_error, quiet_libraries
from sepdense.errors import ConfigError
from sepdense.measure import environment
from sepdense.module import ImageClassifier
from sepdense.precision import resolve_precision, scalars
from sepdense.runs import (
    is_run_dir,
    last_checkpoint,
    remove_run_without_results,
    write_confusion,
    write_environment,
    write_metrics,
    write_predictions,
)
from sepdense.runtime import reuse_freed_memory

log = logging.getLogger(__name__)
# TensorBoard's HPARAMS tab: the values that tell runs apart and the recipe (the whole config is in
# .hydra/config.yaml), the measured size, and as metrics the final values of curves already logged.
HPARAMS_FIRST = ("model.conv", "seed")
HPARAMS_RECIPE = ("data.batch_size", "model.block_config", "model.growth_rate", "model.bottleneck",
                  "model.separable_mid_norm", "optimizer.lr", "optimizer.weight_decay", "trainer.max_epochs",
                  "trainer.precision", "module.label_smoothing", "module.channels_last", "module.compile",
                  "module.cuda_graph")  # fmt: skip
HPARAMS_MEASURED = ("model/params", "model/macs", "model/latency_b1_ms", "time/fit_s")
HPARAMS_METRICS = ("test/acc", "test/f1", "val/acc", "time/train_images_per_s")


def config_nodes(group: DictConfig | None) -> list[DictConfig]:
    """Every ``_target_`` node directly under a config group (callbacks, loggers), in config order."""
    return [node for node in (group or {}).values() if isinstance(node, DictConfig) and "_target_" in node]


def instantiate_all(group: DictConfig | None) -> list[Any]:
    return [hydra.utils.instantiate(node) for node in config_nodes(group)]


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


def checkpoint_to_resume(cfg: DictConfig, output_dir: Path) -> str | None:
    """``ckpt_path`` if given; with ``resume``, this run directory's last.ckpt if it exists."""
    if cfg.get("ckpt_path"):
        return cfg.ckpt_path
    resume = cfg.get("resume")
    if resume not in (None, False, True, "true", "false") and not is_run_dir(Path(str(resume))):
        raise ConfigError(
            f"resume={resume} is not a run directory (it has no .hydra/config.yaml); give a directory under "
            f"logs/train/runs, or resume=true for the last run of the same command."
        )
    if resume:
        last = last_checkpoint(output_dir)
        if last.is_file():
            log.info("Resuming from %s", last)
            return str(last)
        log.warning("resume is set but %s does not exist: starting from scratch.", last)
    return None


def build_loggers(cfg: DictConfig, ckpt_path: str | None) -> list[Any]:
    """The configured loggers; resuming, TensorBoard hides what the interrupted run logged after the checkpoint."""
    loggers = []
    for node in config_nodes(cfg.get("logger")):
        kwargs = {}
        if ckpt_path and node._target_.endswith("TensorBoardLogger"):
            # The steps between the checkpoint and the crash are trained again; without purge_step they
            # would show twice. Events at steps up to the checkpoint's (its last epoch's metrics) stay.
            # Memory-mapped: only the step counter is read here; Lightning loads the whole checkpoint later.
            saved = load_checkpoint(ckpt_path, mmap=True)
            kwargs["purge_step"] = saved["global_step"] + 1
        loggers.append(hydra.utils.instantiate(node, **kwargs))
    return loggers


def write_hparams(logger: TensorBoardLogger, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """The HPARAMS tab: one row per run, conv type and seed first, then the recipe and the measured size."""
    config = flatten(OmegaConf.to_container(cfg, resolve=True))
    values = {k: config[k] for k in (*HPARAMS_FIRST, *HPARAMS_RECIPE) if k in config}
    values["data.source"] = str(OmegaConf.select(cfg, "data.source._target_", default="?")).rsplit(".", 1)[-1]
    values |= {k.replace("/", "."): metrics[k] for k in HPARAMS_MEASURED if k in metrics}
    values = {k: v if v is not None else "null" for k, v in values.items()}
    experiment, start, end = hparams(values, {k: metrics.get(k, 0.0) for k in HPARAMS_METRICS})
    # TensorBoard shows columns with `differs` set first, then by name, and the first five by default:
    # marking the two that tell the runs of a comparison apart puts them in front.
    data = HParamsPluginData.FromString(experiment.value[0].metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in HPARAMS_FIRST
    experiment.value[0].metadata.plugin_data.content = data.SerializeToString()
    # Written directly (not through logger.log_hyperparams): that would log each metric again as a
    # one-point curve at step 0. The HPARAMS tab reads the metrics' last values from their curves.
    for summary in (experiment, start, end):
        logger.experiment._get_file_writer().add_summary(summary)  # reopens the writer that test() closed


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model of ``cfg``, test its best checkpoint, save and return the final metrics."""
    quiet_libraries()
    output_dir = Path(cfg.paths.output_dir)
    try:
        return _train(cfg, output_dir)
    except Exception as err:
        # A mistake found before anything was saved leaves no empty run directory behind; a resumed
        # run's directory is the earlier run's, whose log and config are kept whatever happens.
        if find_user_error(err) is not None and not cfg.get("resume"):
            remove_run_without_results(output_dir)
        raise


def _train(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    if cfg.get("reuse_freed_memory", True) and not reuse_freed_memory():
        log.info("reuse_freed_memory has no effect here: the C library is not glibc.")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_environment(output_dir, environment())

    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data)
    net_config = {**OmegaConf.to_container(cfg.model, resolve=True), "num_classes": datamodule.num_classes}
    scheduler = hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = ImageClassifier(
        net=net_config,
        class_names=datamodule.class_names,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=scheduler,
        **cfg.module,
    )
    callbacks = instantiate_all(cfg.get("callbacks"))
    # A progress bar is for a terminal; written to a file (nohup, SLURM) only its last frame survives,
    # and the per-epoch lines of EpochLog say what it would have.
    show_progress = sys.stdout.isatty() and any(isinstance(c, ProgressBar) for c in callbacks)
    callbacks = [c for c in callbacks if show_progress or not isinstance(c, ProgressBar)]
    ckpt_path = checkpoint_to_resume(cfg, output_dir)
    loggers = build_loggers(cfg, ckpt_path)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        precision=resolve_precision(cfg.trainer.precision),
        enable_progress_bar=show_progress,
    )

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = scalars(trainer.callback_metrics)  # the last epoch's train and val metrics
    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if best is not None and checkpoint.best_model_score is not None:
        metrics[f"{checkpoint.monitor}_best"] = float(checkpoint.best_model_score)
    if cfg.get("test", True):
        if best is None:
            log.warning("No best checkpoint was saved; testing the weights at the end of training.")
        trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        metrics.update(scalars(trainer.callback_metrics))
    for callback in callbacks:
        if isinstance(callback, SummaryCallback):
            metrics.update(callback.summary())
    metrics["best_checkpoint"] = best
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
        if "test" in module.confusion:
            write_confusion(output_dir, module.class_names, module.confusion["test"].tolist())
            write_predictions(output_dir, module.predictions, module.class_names)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                write_hparams(logger, cfg, metrics)
                logger.finalize("success")
    return metrics
