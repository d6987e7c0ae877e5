"""Training: build everything from the Hydra config, fit, test the best checkpoint, return the metrics."""

from __future__ import annotations

import contextlib
import difflib
import inspect
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
from sepdense.module import ImageClassifier, NonFiniteLossError
from sepdense.precision import resolve_precision, scalars
from sepdense.resolvers import resume_request, run_differences
from sepdense.runs import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    ENVIRONMENT_FILE,
    METRICS_FILE,
    MULTIRUN_FILE,
    contents,
    has_results,
    is_run_dir,
    read_config,
    remove_run_without_results,
    write_confusion,
    write_environment,
    write_metrics,
    write_predictions,
)
from sepdense.runtime import reuse_freed_memory
from sepdense.stopping import (
    EXTENDED,
    FAILURE,
    FAILURE_REPEATS,
    TIME_LIMIT_EXIT,
    JobRunning,
    continue_command,
    failed,
    fit_ending,
    in_worker_process,
    interrupted,
    is_complete,
    is_multirun,
    time_left,
    watch_signals_in_worker,
    worker_stop_requested,
)
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
    request = resume_request(cfg.get("resume"))
    if request is False:
        return None
    if request is not True and not is_run_dir(request):
        raise ConfigError(
            f"resume={request} is not a run directory (it has no .hydra/config.yaml); give a directory under "
            f"logs/train/runs, or resume=true for the last run of the same command."
        )
    candidates = list((output_dir / CHECKPOINT_DIR).glob("*.ckpt"))
    if not candidates and request is True:
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


def stop_interrupted(callbacks: list[Any], trainer: pl.Trainer, output_dir: Path, err: BaseException,
                     record: dict[str, Any]) -> None:  # fmt: skip
    """After a signal or the time limit stopped fitting: record the run as unfinished, and stop with one line
    that says what was saved and how to continue (exit status 124 for the time limit, 128 + N for signal N)."""
    interruption = next((c for c in callbacks if isinstance(c, Interruption)), None)
    if interruption is None or interruption.signal is None:
        return
    time_limit = next((c for c in callbacks if isinstance(c, TimeLimit) and c.reached), None)
    by = "time_limit" if time_limit is not None else "signal"
    if trainer.is_global_zero:
        last = {k: v for k, v in scalars(trainer.callback_metrics).items() if not k.startswith("test/")}
        write_metrics(output_dir, last | interrupted(trainer.current_epoch, trainer.max_epochs, by) | record)
    saved = (f"saved epoch {trainer.current_epoch + 1} of {trainer.max_epochs}, step {trainer.global_step}, in "
             f"{interruption.saved}" if interruption.saved else "nothing new to save")  # fmt: skip
    if time_limit is not None:
        what, code = f"Time limit time_limit={time_limit.limit} reached", TIME_LIMIT_EXIT
    else:
        what = f"Stopped by {interruption.signal}"
        code = 128 + (signal.SIGTERM if interruption.signal == "SIGTERM" else signal.SIGINT)
    raise RunInterrupted(f"{what}: {saved}. Continue with: {continue_command()}", exit_code=code) from err


def check_same_run(cfg: DictConfig, output_dir: Path) -> None:
    """Refuse, in one line, to resume a run with a command that would change it (its saved config wins)."""
    typed = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    differences = run_differences(read_config(output_dir), cfg, typed)
    if differences:
        shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise ConfigError(
            f"This command differs from the run it resumes ({output_dir / CONFIG_FILE}, as saved -> now): {shown}. A "
            f"resume continues a run as it was (only resume, time_limit and a larger trainer.max_epochs may change): "
            f"give the run's own settings, or start a new run without resume=."
        )


def extension(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """``{extended_from_epochs: N}`` for a run resumed with more epochs than it was planned for (its saved config).

    Such a run is recorded as extended, not as one planned for the new count: the learning-rate
    schedule, computed for the new count from here on, was the shorter one's until now.
    """
    planned = OmegaConf.select(read_config(output_dir), "trainer.max_epochs", default=None)
    now = cfg.trainer.max_epochs
    if not isinstance(planned, int) or not isinstance(now, int) or now <= planned or planned < 0:
        return {}
    log.warning("trainer.max_epochs=%d extends a run planned for %d epochs: from here on the learning-rate schedule "
                "is that of a %d-epoch run (until now it was the %d-epoch one), and metrics.json records it as "
                "%s=%d, not as a %d-epoch run.", now, planned, now, planned, EXTENDED, planned, now)  # fmt: skip
    return {EXTENDED: planned}


def record_failure(output_dir: Path, error: BaseException) -> dict[str, Any]:
    """Write into the run's metrics.json that it failed and why (keeping what it recorded before); return that."""
    path = output_dir / METRICS_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    # A diverged loss diverges again from the same checkpoint; a missing file or a full disk may be fixed meanwhile.
    record = saved | failed(str(error), repeats=isinstance(error, NonFiniteLossError))
    output_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(output_dir, record)
    return record


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the model of ``cfg``, test its best checkpoint, save and return the final metrics.

    A mistake or a diverged loss ends a single run with the error (after removing what a failed start
    added, or recording the failure in metrics.json where the run had results). In a sweep, the job is
    recorded as failed and its record returned, so that the sweep goes on to its other jobs.
    """
    quiet_libraries()
    output_dir = Path(cfg.paths.output_dir)
    before = contents(output_dir)
    # An earlier run's directory (resumed) has its environment.json; its log and config are kept whatever happens.
    resumed = (output_dir / ENVIRONMENT_FILE).exists()
    started: list[bool] = []
    worker = in_worker_process()
    if worker:
        watch_signals_in_worker(sweep_command())
        left = time_left(cfg.get("time_limit"))  # past the time limit, the job says so itself (in _train)
        if worker_stop_requested() and (left is None or left > 0):
            log.warning("%s not started: %s stopped this sweep.", output_dir.name, worker_stop_requested())
            return interrupted(0, cfg.trainer.max_epochs, "signal")
    try:
        with JobRunning() if worker else contextlib.nullcontext():
            return _train(cfg, output_dir, started)
    except (KeyboardInterrupt, SystemExit):
        if worker and worker_stop_requested():
            # Stopped outside fitting (while starting, or testing: Lightning ends a test on a signal by exiting),
            # where nothing is saved: the job continues from its last checkpoint. Raised, joblib would end the
            # jobs beside it before they saved their steps.
            log.warning("%s stopped by %s outside training; resume=true continues it from its last checkpoint.",
                        output_dir.name, worker_stop_requested())  # fmt: skip
            return {"complete": False, "stopped_by": "signal"}
        raise
    except Exception as err:
        error = find_user_error(err)
        if isinstance(error, RunInterrupted) and worker:
            # A job of a parallel sweep stopped by the time limit or a signal: the jobs beside it stop too and save
            # their steps, which they could not if this raised (joblib would end them at once). The sweep's end
            # says how to continue, and exits with 124 (or 128 + the signal's number).
            log.warning("%s", error)
            saved = output_dir / METRICS_FILE
            by = "time_limit" if error.exit_code == TIME_LIMIT_EXIT else "signal"
            return json.loads(saved.read_text()) if saved.is_file() else {"complete": False, "stopped_by": by}
        if error is None or isinstance(error, RunInterrupted):  # a stop on a signal or the time limit ends a sweep
            raise
        if is_multirun():
            print(f"error: {error} ({output_dir.name} recorded as failed; the sweep goes on)", file=sys.stderr)
            if started or not (output_dir / METRICS_FILE).is_file():
                return record_failure(output_dir, error)
            return failed(str(error), repeats=False)  # refused before it started: the run's files stay as they were
        if started and (resumed or has_results(output_dir)):
            record_failure(output_dir, error)
        elif not resumed:
            remove_run_without_results(output_dir, before)
        raise


def sweep_command() -> str:
    """Which command this sweep job belongs to: its sweep directory, and when that command (each resume=true too)
    saved the sweep's multirun.yaml there, before starting any job."""
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    try:
        return f"{sweep_dir.resolve()}@{(sweep_dir / MULTIRUN_FILE).stat().st_mtime_ns}"
    except OSError:
        return str(sweep_dir)


def check_config(cfg: DictConfig) -> None:
    """Mistakes that would otherwise surface deep in a library, or not at all, refused in one line before
    anything is trained: a sweep experiment run as one run, a length the schedule cannot be planned over, a
    model setting the network does not have."""
    swept = HydraConfig.get().sweeper.get("params") if HydraConfig.initialized() else None
    if swept and not is_multirun():
        runs = ", ".join(f"{key}: {values}" for key, values in swept.items())
        overrides = " ".join(HydraConfig.get().overrides.task)
        raise ConfigError(f"This config is a sweep ({runs}), which runs only with -m: python train.py -m {overrides}; "
                          f"for one of its runs, leave out the experiment and give its settings.")  # fmt: skip
    epochs = cfg.trainer.get("max_epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"trainer.max_epochs={epochs} must be a whole number of at least 1 (the learning-rate "
                          f"schedule is planned over it), e.g. trainer.max_epochs=100.")  # fmt: skip
    target = hydra.utils.get_class(cfg.model._target_)
    known = [name for name in inspect.signature(target).parameters if name != "self"]
    unknown = [key for key in cfg.model if key != "_target_" and key not in known]
    if unknown:
        hints = [f"model.{key}" + (f" (did you mean model.{close[0]}?)" if (close := difflib.get_close_matches(
            key, known, n=1)) else "") for key in unknown]  # fmt: skip
        raise ConfigError(f"{', '.join(hints)} is not a setting of {target.__name__}; its settings: "
                          f"{', '.join(known)}.")  # fmt: skip


def check_checkpoint_fits(ckpt_path: str, module: ImageClassifier, net_config: dict[str, Any]) -> None:
    """Refuse, in one line naming the settings that differ, a ``ckpt_path`` saved from a network of another size."""
    checkpoint = load_checkpoint(ckpt_path, mmap=True)
    saved = checkpoint.get("state_dict", {})
    here = module.state_dict()
    differ = [name for name, tensor in here.items() if name in saved and saved[name].shape != tensor.shape]
    missing = [name for name in here if name not in saved]
    if not differ and not missing:
        return
    saved_net = checkpoint.get("hyper_parameters", {}).get("net", {})
    settings = [f"model.{key} is {saved_net[key]} there and {value} here" for key, value in net_config.items()
                if key in saved_net and saved_net[key] != value]  # fmt: skip
    example = (f"{differ[0]}: {list(saved[differ[0]].shape)} there, {list(here[differ[0]].shape)} here"
               if differ else f"{missing[0]} is not in it")  # fmt: skip
    others = len(differ) + len(missing) - 1
    raise ConfigError(f"ckpt_path={ckpt_path} holds a network of another size ({'; '.join(settings) or example}"
                      f"{f'; {example}' if settings else ''}{f', and {others} more tensors' if others else ''}); "
                      f"train with the model settings it was saved with, or leave out ckpt_path.")  # fmt: skip


def _train(cfg: DictConfig, output_dir: Path, started: list[bool]) -> dict[str, Any]:
    check_config(cfg)
    if cfg.get("reuse_freed_memory", True) and not reuse_freed_memory():
        log.info("reuse_freed_memory has no effect here: the C library is not glibc.")
    left = time_left(cfg.get("time_limit"))
    if left is not None and left <= 0:
        raise RunInterrupted(f"Time limit time_limit={cfg.time_limit} reached before {output_dir.name} started: not "
                             f"started. Continue with: {continue_command()}", exit_code=TIME_LIMIT_EXIT)  # fmt: skip
    resuming = resume_request(cfg.get("resume")) is not False and is_run_dir(output_dir)
    if resuming:
        check_same_run(cfg, output_dir)
    if resuming and (output_dir / METRICS_FILE).is_file():
        saved = json.loads((output_dir / METRICS_FILE).read_text())
        # A finished job of a continued sweep: nothing is trained or tested again. Asked for more epochs, it goes on.
        if is_complete(saved) and saved.get("epochs_planned") == cfg.trainer.max_epochs:
            log.info("%s is complete (%s): not trained or tested again.", output_dir, saved.get("stopped_by", "done"))
            return saved
        if saved.get(FAILURE_REPEATS) and not cfg.get("retry_failed"):
            message = (f"{output_dir.name} failed before ({saved[FAILURE]}), for a reason that would repeat: not run "
                       f"again; add retry_failed=true to run it again.")  # fmt: skip
            if not is_multirun():
                raise ConfigError(message)
            log.warning(message)
            return saved
    record = extension(cfg, output_dir) if resuming else {}
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
    started.append(True)

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
    if cfg.get("ckpt_path"):
        check_checkpoint_fits(str(cfg.ckpt_path), module, net_config)
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
        stop_interrupted(callbacks, trainer, output_dir, err, record)
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
    metrics |= fit_ending(trainer.current_epoch, trainer.max_epochs, trainer.global_step, trainer.max_steps, early)
    if not is_complete(metrics):
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
    metrics |= record
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
