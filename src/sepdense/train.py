"""Training: build everything from the Hydra config, fit, test the best checkpoint, return the metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from sepdense.callbacks import SummaryCallback
from sepdense.errors import ConfigError
from sepdense.module import ImageClassifier
from sepdense.runs import is_run_dir, last_checkpoint, write_confusion, write_environment, write_metrics

log = logging.getLogger(__name__)
# Final numbers shown in TensorBoard's HPARAMS tab beside the config (prefixed hp/ so they do not
# collide with the per-epoch curves of the same metrics).
HPARAM_METRICS = ("test/acc", "test/f1", "val/acc", "model/params", "model/macs", "time/train_images_per_s")


def resolve_precision(precision: str | int) -> str | int:
    """'auto' means bf16 mixed precision on a GPU that supports it and full fp32 elsewhere."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Every ``_target_`` node directly under a config group (callbacks, loggers), in config order."""
    if not group:
        return []
    return [
        hydra.utils.instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node
    ]


def scalars(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if torch.as_tensor(v).numel() == 1}


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config to 'a/b/c' keys with TensorBoard-friendly values (lists become strings)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
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


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model of ``cfg``, test its best checkpoint, save and return the final metrics."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_environment(output_dir)

    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data)
    net = hydra.utils.instantiate(cfg.model, num_classes=datamodule.num_classes)
    scheduler = hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = ImageClassifier(
        net=net,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=scheduler,
        class_names=datamodule.class_names,
        **cfg.module,
    )
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, precision=resolve_precision(cfg.trainer.precision)
    )

    trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint_to_resume(cfg, output_dir))
    metrics = scalars(trainer.callback_metrics)  # the last epoch's train and val metrics
    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if best is not None and checkpoint.best_model_score is not None:
        metrics[f"{checkpoint.monitor}_best"] = float(checkpoint.best_model_score)
    if cfg.get("test", True):
        if best is None:
            log.warning("No best checkpoint was saved; testing the weights at the end of training.")
        trainer.test(module, datamodule=datamodule, ckpt_path=best)
        metrics.update(scalars(trainer.callback_metrics))
    for callback in callbacks:
        if isinstance(callback, SummaryCallback):
            metrics.update(callback.summary())
    metrics["best_checkpoint"] = best
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
        if "test" in module.confusion:
            write_confusion(output_dir, module.class_names, module.confusion["test"].tolist())
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                finals = {f"hp/{k.replace('/', '_')}": metrics[k] for k in HPARAM_METRICS if k in metrics}
                logger.log_hyperparams(flatten(OmegaConf.to_container(cfg, resolve=True)), metrics=finals)
                logger.finalize("success")
    return metrics
