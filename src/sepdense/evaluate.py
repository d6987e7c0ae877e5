"""Evaluate a checkpoint: `python -m sepdense.evaluate ckpt_path=<checkpoint or run dir> [data=...] [split=val]`.

Rebuilds the model from the checkpoint (its network config is saved in it), evaluates it on the
chosen split of the run's own data (or of ``data=...`` when given), prints accuracy, macro and
per-class precision / recall / F1, and saves them, the confusion matrix and the per-image test
predictions in the evaluation's run directory, under the same names and keys as training.
``engine=onnxruntime [quantize=int8]`` computes them from the network exported to ONNX (and
quantized) and run by ONNX Runtime instead. The model rebuilding is shared with ``sepdense.export``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sepdense.checkpoints import DATA_TARGETS, load_checkpoint, plain_config
from sepdense.cli import find_user_error, quiet_libraries, run_reporting_user_errors
from sepdense.errors import ConfigError
from sepdense.runs import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    contents,
    is_run_dir,
    read_config,
    remove_run_without_results,
    write_confusion,
    write_metrics,
    write_predictions,
)
from sepdense.tables import markdown_table

log = logging.getLogger("sepdense")
SPLITS = ("test", "val")
ENGINES = ("pytorch", "onnxruntime")


def find_checkpoint(path: str) -> tuple[Path, Path | None]:
    """(checkpoint file, its run directory or None) for a checkpoint file or a run directory."""
    given = Path(path)
    if given.is_dir():
        for name in (BEST_CHECKPOINT, LAST_CHECKPOINT):
            if (given / CHECKPOINT_DIR / name).is_file():
                return given / CHECKPOINT_DIR / name, given if is_run_dir(given) else None
        raise ConfigError(f"ckpt_path={path} is a directory without {CHECKPOINT_DIR}/{BEST_CHECKPOINT} or "
                          f"{LAST_CHECKPOINT}; give a run directory or a .ckpt file.")  # fmt: skip
    if not given.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist; give a run directory or a .ckpt file.")
    run_dir = given.parent.parent
    return given, run_dir if is_run_dir(run_dir) else None


def data_config(cfg: DictConfig, run_dir: Path | None) -> DictConfig:
    """The data the run was trained on, with the command line's ``data.<key>=...`` applied to it.

    ``data=<name>`` on the command line replaces it (and a checkpoint outside a run directory has
    only the command line's data to go by).
    """
    overrides = [str(o).lstrip("+") for o in HydraConfig.get().overrides.task]
    if run_dir is None or any(o.split("=", 1)[0] == "data" for o in overrides):
        return cfg.data
    # Its _target_s are instantiated: resolved on its own and checked, a saved config naming anything but our data
    # classes (directly or through an interpolation) is refused.
    data = plain_config(read_config(run_dir), "data", DATA_TARGETS, run_dir / CONFIG_FILE)
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("data.") and "=" in override:  # the value as Hydra parsed it into cfg
            OmegaConf.update(data, key.removeprefix("data."), OmegaConf.select(cfg, key), force_add=True)
    return data


def load_classifier(checkpoint: Path) -> Any:
    """The ImageClassifier of a checkpoint, rebuilt from the network config saved in it, on the CPU."""
    from sepdense.module import ImageClassifier

    load_checkpoint(checkpoint, mmap=True)  # refuses a file that holds code before Lightning reads it
    try:
        return ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True,
                                                    compile=False, cuda_graph=False)  # fmt: skip
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{checkpoint} was not saved by this version of sepdense ({err}); "
                          f"evaluate a checkpoint of a newer run.") from err  # fmt: skip


def checkpoint_path(cfg: DictConfig) -> tuple[Path, Path | None]:
    """(checkpoint file, its run directory or None) for ``cfg.ckpt_path``, checked before torch loads."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path is missing; give a run directory or a .ckpt file: ckpt_path=<path>.")
    return find_checkpoint(str(cfg.ckpt_path))


def model_and_data(cfg: DictConfig, checkpoint: Path, run_dir: Path | None) -> tuple[Any, Any]:
    """The checkpoint's model and the data to run it on: the one way evaluate and export rebuild a model.

    The data is the run's own (see ``data_config``) and must have the checkpoint's classes.
    """
    module = load_classifier(checkpoint)
    datamodule = hydra.utils.instantiate(data_config(cfg, run_dir))
    if tuple(module.class_names) != tuple(datamodule.class_names):
        raise ConfigError(f"{checkpoint} was trained on the classes {list(module.class_names)}, but the data has "
                          f"{list(datamodule.class_names)}; evaluate it on data with the same classes in the "
                          f"same order (data.source.class_names).")  # fmt: skip
    return module, datamodule


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; a mistake ends in a UserError and leaves no run directory."""
    quiet_libraries()
    output_dir = Path(cfg.paths.output_dir)
    before = contents(output_dir)
    try:
        return _evaluate(cfg, output_dir)
    except Exception as err:
        if find_user_error(err) is not None:
            remove_run_without_results(output_dir, before)  # what it added only; hydra.run.dir=. keeps the rest
        raise


def _evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split} is not a split; use one of: {', '.join(SPLITS)}.")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"engine={cfg.engine} is not an engine; use one of: {', '.join(ENGINES)}.")
    if cfg.quantize not in (None, "int8"):
        raise ConfigError(f"quantize={cfg.quantize} is not supported; use quantize=int8 or leave it out.")
    if cfg.quantize and cfg.engine != "onnxruntime":
        raise ConfigError("quantize=int8 runs the quantized model in ONNX Runtime; add engine=onnxruntime.")
    checkpoint, run_dir = checkpoint_path(cfg)
    # Loaded after the checks above, so that a mistyped split or path is reported at once (torch
    # and Lightning take ~10 s to import on a small machine).
    from sepdense.deployment import (
        deploy_network,
        open_session,
        record_deployed,
        require_deploy_packages,
        session_network,
    )
    from sepdense.precision import resolve_precision, scalars
    from sepdense.runtime import reuse_freed_memory

    if cfg.engine == "onnxruntime":
        require_deploy_packages()

    if cfg.reuse_freed_memory and not reuse_freed_memory():
        log.info("reuse_freed_memory has no effect here: the C library is not glibc.")
    module, datamodule = model_and_data(cfg, checkpoint, run_dir)
    trainer_args: dict[str, Any] = {"precision": resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)}
    deployed: dict[str, Any] = {}
    if cfg.engine == "onnxruntime":
        deployed = deploy_network(module.net, datamodule, output_dir, cfg.quantize, cfg.calibration_images)
        model_file = deployed["files"][cfg.quantize or "fp32"]
        module.net, module.channels_last = session_network(open_session(model_file)), False
        # The session runs on the CPU, in float32, whatever the trainer config says.
        trainer_args = {"precision": "32-true", "accelerator": "cpu", "devices": 1, "strategy": "auto"}
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False,
                                      enable_progress_bar=False, **trainer_args)  # fmt: skip
    log.info("Evaluating %s on the %s split with %s", checkpoint, cfg.split, engine_name(cfg))
    run = trainer.test if cfg.split == "test" else trainer.validate
    run(module, datamodule=datamodule, verbose=False)
    metrics = scalars(trainer.callback_metrics) | {"checkpoint": str(checkpoint), "engine": engine_name(cfg)}
    if deployed:
        metrics["model_file"] = str(model_file)
    write_metrics(output_dir, metrics)
    if cfg.split in module.confusion:
        write_confusion(output_dir, module.class_names, module.confusion[cfg.split].tolist())
    if cfg.split == "test":
        write_predictions(output_dir, module.predictions, module.class_names)
        if deployed and run_dir is not None:  # for the run's report: the accuracy that survives deployment
            accuracy = {"test/acc": metrics["test/acc"], "test/f1": metrics["test/f1"], "evaluation": str(output_dir)}
            record_deployed(run_dir, cfg.quantize or "fp32", accuracy)
    images = int(module.confusion[cfg.split].sum()) if cfg.split in module.confusion else 0
    print(metrics_table(metrics, cfg.split, module.class_names, images))
    print(f"Engine: {engine_name(cfg)}. Saved in {output_dir}")
    return metrics


def engine_name(cfg: DictConfig) -> str:
    from sepdense.deployment import QUANTIZATION

    if cfg.engine == "pytorch":
        return "pytorch"
    return f"onnxruntime {cfg.quantize or 'fp32'}" + (f" ({QUANTIZATION})" if cfg.quantize else "")


def metrics_table(metrics: dict[str, float], split: str, class_names: list[str], images: int) -> str:
    """Overall figures, then one row per class, in %."""

    def pct(key: str) -> str:
        return f"{100 * metrics[key]:.2f}" if key in metrics else "absent"

    overall = [{"split": split, "images": images, "acc (%)": pct(f"{split}/acc"),
                **{f"macro {m} (%)": pct(f"{split}/{m}") for m in ("precision", "recall", "f1")}}]  # fmt: skip
    per_class = [{"class": c, **{f"{m} (%)": pct(f"{split}/{m}/{c}") for m in ("precision", "recall", "f1")}}
                 for c in class_names]  # fmt: skip
    return markdown_table(overall) + "\n" + markdown_table(per_class)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_reporting_user_errors(evaluate, cfg)


if __name__ == "__main__":
    main()
