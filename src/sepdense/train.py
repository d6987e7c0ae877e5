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

from sepdense.callbacks import SummaryCallback
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
from sepdense.tracking import build_loggers, finish_tracking

log = logging.getLogger(__name__)


def config_nodes(group: DictConfig | None) -> list[DictConfig]:
    """Every ``_target_`` node directly under a config group (callbacks, loggers), in config order."""
    return [node for node in (group or {}).values() if isinstance(node, DictConfig) and "_target_" in node]


def instantiate_all(group: DictConfig | None) -> list[Any]:
    return [hydra.utils.instantiate(node) for node in config_nodes(group)]


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
        finish_tracking(trainer.loggers, cfg, metrics, output_dir)
    return metrics
