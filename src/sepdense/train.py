"""Training: build everything from the Hydra config, fit, test the best checkpoint, return the metrics."""

from __future__ import annotations

import json
import logging
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar, Timer

from sepdense.callbacks import Interruption, LastMetrics, SummaryCallback, TimeLimit
from sepdense.checkpoint_io import AtomicCheckpointIO
from sepdense.checkpoints import load_checkpoint, newest_loadable
from sepdense.cli import find_user_error, quiet_libraries
from sepdense.errors import ConfigError, RunInterrupted
from sepdense.measure import environment
from sepdense.module import ImageClassifier
from sepdense.precision import resolve_precision, scalars
from sepdense.runs import (
    CHECKPOINT_DIR,
    ENVIRONMENT_FILE,
    METRICS_FILE,
    is_run_dir,
    remove_run_without_results,
    write_confusion,
    write_environment,
    write_metrics,
    write_predictions,
)
from sepdense.runtime import reuse_freed_memory
from sepdense.stopping import TIME_LIMIT_EXIT, completion, interrupted, is_complete, time_left
from sepdense.tracking import build_loggers, finish_tracking

log = logging.getLogger(__name__)


def config_nodes(group: DictConfig | None) -> list[DictConfig]:
    """Every ``_target_`` node directly under a config group (callbacks, loggers), in config order."""
    return [node for node in (group or {}).values() if isinstance(node, DictConfig) and "_target_" in node]


def instantiate_all(group: DictConfig | None) -> list[Any]:
    return [hydra.utils.instantiate(node) for node in config_nodes(group)]


def checkpoint_to_resume(cfg: DictConfig, output_dir: Path) -> str | None:
    """``ckpt_path`` if given; with ``resume``, the newest checkpoint of this run directory that loads.

    Each file is checked before anything else happens: one that holds code, or is truncated, stops
    the run with one line (``ckpt_path``), or is named and passed over for an older one (``resume``).
    A resume with nothing to resume from stops too: it never silently starts from scratch.
    """
    if cfg.get("ckpt_path"):
        load_checkpoint(cfg.ckpt_path, mmap=True)
        return str(cfg.ckpt_path)
    resume = cfg.get("resume")
    if resume in (None, False, "false", "False"):
        return None
    if resume not in (True, "true", "True") and not is_run_dir(Path(str(resume))):
        raise ConfigError(
            f"resume={resume} is not a run directory (it has no .hydra/config.yaml); give a directory under "
            f"logs/train/runs, or resume=true for the last run of the same command."
        )
    candidates = list((output_dir / CHECKPOINT_DIR).glob("*.ckpt"))
    if not candidates and resume in (True, "true", "True"):
        if is_multirun():  # a job of a continued sweep that had not saved anything yet starts (again)
            return None
        raise ConfigError(nothing_to_resume(cfg))
    if not candidates:
        raise ConfigError(f"{output_dir} has no checkpoint to resume from (nothing in {CHECKPOINT_DIR}/); start a "
                          f"new run without resume=.")  # fmt: skip
    chosen = newest_loadable(candidates, report=log.warning)
    if chosen is None:
        raise ConfigError(f"None of the checkpoints in {output_dir / CHECKPOINT_DIR} loads (each is named above), so "
                          f"the run cannot continue; start a new run without resume=, or copy a good checkpoint "
                          f"there.")  # fmt: skip
    log.info("Resuming from %s", chosen)
    return str(chosen)


def nothing_to_resume(cfg: DictConfig) -> str:
    """The message for ``resume=true`` when no earlier run of the same command has a checkpoint."""
    runs_dir = Path(cfg.paths.log_dir) / str(cfg.task_name) / "runs"
    wanted = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    command = " ".join(o for o in wanted if not o.startswith("resume=")) or "(no overrides)"
    others = [p.parent.parent for p in runs_dir.glob(f"*/{CHECKPOINT_DIR}/*.ckpt")]
    listed = ", ".join(sorted({p.name for p in others}, reverse=True)[:3])
    return (
        f"resume=true: no earlier run of this command ({command}) has a checkpoint under {runs_dir}"
        + (f" (runs with checkpoints there: {listed}; resume=<run dir> continues one of them)" if listed else "")
        + "; to start a new run, leave out resume=true."
    )


def is_multirun() -> bool:
    return HydraConfig.initialized() and str(HydraConfig.get().mode).endswith("MULTIRUN")


def continue_command() -> str:
    """The command that continues this run, or the sweep it belongs to: the same overrides with resume=true."""
    if is_multirun():
        argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("train.py") else ["-m", "<the sweep's overrides>"]
    else:
        argv = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return " ".join(["python train.py", *(a for a in argv if not a.lstrip("+~").startswith("resume=")), "resume=true"])


def stop_interrupted(callbacks: list[Any], trainer: pl.Trainer, output_dir: Path, err: BaseException) -> None:
    """After a signal or the time limit stopped fitting: record the run as unfinished, and stop with one line
    that says what was saved and how to continue (exit status 124 for the time limit, 128 + N for signal N)."""
    interruption = next((c for c in callbacks if isinstance(c, Interruption)), None)
    if interruption is None or interruption.signal is None:
        return
    time_limit = next((c for c in callbacks if isinstance(c, TimeLimit) and c.reached), None)
    by = "time_limit" if time_limit is not None else "signal"
    if trainer.is_global_zero:
        last = {k: v for k, v in scalars(trainer.callback_metrics).items() if not k.startswith("test/")}
        write_metrics(output_dir, last | interrupted(trainer.current_epoch, trainer.max_epochs, by))
    saved = (f"saved epoch {trainer.current_epoch + 1} of {trainer.max_epochs}, step {trainer.global_step}, in "
             f"{interruption.saved}" if interruption.saved else "nothing new to save")  # fmt: skip
    if time_limit is not None:
        what, code = f"Time limit time_limit={time_limit.limit} reached", TIME_LIMIT_EXIT
    else:
        what = f"Stopped by {interruption.signal}"
        code = 128 + (signal.SIGTERM if interruption.signal == "SIGTERM" else signal.SIGINT)
    raise RunInterrupted(f"{what}: {saved}. Continue with: {continue_command()}", exit_code=code) from err


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the model of ``cfg``, test its best checkpoint, save and return the final metrics."""
    quiet_libraries()
    output_dir = Path(cfg.paths.output_dir)
    # An earlier run's directory (resumed) has its environment.json; its log and config are kept whatever happens.
    created_here = not (output_dir / ENVIRONMENT_FILE).exists()
    try:
        return _train(cfg, output_dir)
    except Exception as err:
        # A mistake found before anything was saved leaves no empty run directory behind.
        if find_user_error(err) is not None and created_here:
            remove_run_without_results(output_dir)
        raise


def _train(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    if cfg.get("reuse_freed_memory", True) and not reuse_freed_memory():
        log.info("reuse_freed_memory has no effect here: the C library is not glibc.")
    left = time_left(cfg.get("time_limit"))
    if left is not None and left <= 0:
        raise RunInterrupted(f"Time limit time_limit={cfg.time_limit} reached before {output_dir.name} started: not "
                             f"started. Continue with: {continue_command()}", exit_code=TIME_LIMIT_EXIT)  # fmt: skip
    if cfg.get("resume") and (output_dir / METRICS_FILE).is_file():
        saved = json.loads((output_dir / METRICS_FILE).read_text())
        # A finished job of a continued sweep: nothing is trained or tested again. Asked for more epochs, it goes on.
        if is_complete(saved) and saved.get("epochs_planned") == cfg.trainer.max_epochs:
            log.info("%s is complete (%s): not trained or tested again.", output_dir, saved.get("stopped_by", "done"))
            return saved
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path = checkpoint_to_resume(cfg, output_dir)
    if ckpt_path:  # continuing this directory: its checkpoints are expected there, and replaced in place
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    output_dir.mkdir(parents=True, exist_ok=True)
    # 'auto' decided once, here, and recorded wherever the run is described (config, loggers, environment, metrics).
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    with open_dict(cfg):
        cfg.trainer.precision = precision
    write_environment(output_dir, environment() | {"precision": precision})

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
    loggers = build_loggers(cfg, ckpt_path)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        enable_progress_bar=show_progress,
        plugins=[AtomicCheckpointIO()],
    )

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except BaseException as err:
        stop_interrupted(callbacks, trainer, output_dir, err)
        raise
    metrics = scalars(trainer.callback_metrics)  # the last epoch's train and val metrics
    for callback in callbacks:
        if isinstance(callback, LastMetrics) and not metrics:  # resumed with no epoch left to train
            metrics = dict(callback.metrics)
    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)  # best.ckpt
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if best is not None and checkpoint.best_model_score is not None:
        metrics[f"{checkpoint.monitor}_best"] = float(checkpoint.best_model_score)
    # A stop before the last epoch asked for by EarlyStopping (its stopped_epoch is 0 for a stop in the first
    # epoch, so should_stop tells), not by Lightning's Timer (trainer.max_time), which also sets should_stop.
    timer_ran_out = any(isinstance(c, Timer) and (c.time_remaining() or 1) <= 0 for c in trainer.callbacks)
    early = trainer.should_stop and not timer_ran_out and any(isinstance(c, EarlyStopping) for c in callbacks)
    metrics |= completion(trainer.current_epoch, trainer.max_epochs, trainer.global_step, trainer.max_steps, early)
    if not metrics["complete"]:
        log.warning("Fitting stopped at epoch %d of %s before its end (e.g. by trainer.max_time): these are not the "
                    "final weights, so they are not tested. To limit time, use time_limit=DD:HH:MM:SS; continue with: "
                    "%s", trainer.current_epoch, trainer.max_epochs, continue_command())  # fmt: skip
    elif cfg.get("test", True):
        if best is None:
            log.warning("No best checkpoint was saved; testing the weights at the end of training.")
        trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        metrics.update(scalars(trainer.callback_metrics))
    for callback in callbacks:
        if isinstance(callback, SummaryCallback):
            metrics.update(callback.summary())
    metrics["best_checkpoint"] = best
    metrics["precision"] = str(precision)
    if trainer.is_global_zero:
        write_metrics(output_dir, metrics)
        if "test" in module.confusion:
            write_confusion(output_dir, module.class_names, module.confusion["test"].tolist())
            write_predictions(output_dir, module.predictions, module.class_names)
        finish_tracking(trainer.loggers, cfg, metrics, output_dir)
        if "test/acc" in metrics:
            log.info("Result: test accuracy %.2f%%, macro F1 %.2f%% (checkpoint %s). Run directory: %s",
                     100 * metrics["test/acc"], 100 * metrics.get("test/f1", float("nan")), best or "at the end",
                     output_dir)  # fmt: skip
    return metrics
