"""Evaluate a checkpoint: `python -m sepdense.evaluate ckpt_path=<checkpoint or run dir> [data=...] [split=val]`.

Rebuilds the model from the checkpoint (its network config is saved in it), evaluates it on the
chosen split of the run's own data (or of ``data=...`` when given), prints accuracy, macro and
per-class precision / recall / F1, and saves them, the confusion matrix and the per-image test
predictions in the evaluation's run directory, under the same names and keys as training.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sepdense.checkpoints import check_targets, load_checkpoint
from sepdense.cli import quiet_libraries, run_reporting_user_errors
from sepdense.errors import ConfigError
from sepdense.runs import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    is_run_dir,
    read_config,
    write_confusion,
    write_metrics,
    write_predictions,
)
from sepdense.tables import markdown_table

log = logging.getLogger("sepdense")
SPLITS = ("test", "val")
DATA_PREFIX = "sepdense.data."


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
    data = read_config(run_dir).data
    # Its _target_s are instantiated: a saved config naming anything but our data classes is refused.
    check_targets(OmegaConf.to_container(data), DATA_PREFIX, run_dir / CONFIG_FILE, "data")
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("data.") and "=" in override:  # the value as Hydra parsed it into cfg
            OmegaConf.update(data, key.removeprefix("data."), OmegaConf.select(cfg, key), force_add=True)
    return data


def evaluate(cfg: DictConfig) -> dict[str, float]:
    quiet_libraries()
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split} is not a split; use one of: {', '.join(SPLITS)}.")
    checkpoint, run_dir = find_checkpoint(str(cfg.ckpt_path))
    # Loaded after the checks above, so that a mistyped split or path is reported at once (torch
    # and Lightning take ~10 s to import on a small machine).
    from sepdense.module import ImageClassifier
    from sepdense.precision import resolve_precision, scalars

    load_checkpoint(checkpoint, mmap=True)  # refuses a file that holds code before Lightning reads it
    try:
        module = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True,
                                                      compile=False, cuda_graph=False)  # fmt: skip
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{checkpoint} was not saved by this version of sepdense ({err}); "
                          f"evaluate a checkpoint of a newer run.") from err  # fmt: skip
    datamodule = hydra.utils.instantiate(data_config(cfg, run_dir))
    if tuple(module.class_names) != tuple(datamodule.class_names):
        raise ConfigError(f"{checkpoint} was trained on the classes {list(module.class_names)}, but the data has "
                          f"{list(datamodule.class_names)}; evaluate it on data with the same classes in the "
                          f"same order (data.source.class_names).")  # fmt: skip
    precision = resolve_precision(cfg.trainer.precision)
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False,
                                      enable_progress_bar=False, precision=precision)  # fmt: skip
    log.info("Evaluating %s on the %s split", checkpoint, cfg.split)
    run = trainer.test if cfg.split == "test" else trainer.validate
    run(module, datamodule=datamodule, verbose=False)
    metrics = scalars(trainer.callback_metrics) | {"checkpoint": str(checkpoint)}
    output_dir = Path(cfg.paths.output_dir)
    write_metrics(output_dir, metrics)
    if cfg.split in module.confusion:
        write_confusion(output_dir, module.class_names, module.confusion[cfg.split].tolist())
    if cfg.split == "test":
        write_predictions(output_dir, module.predictions, module.class_names)
    images = int(module.confusion[cfg.split].sum()) if cfg.split in module.confusion else 0
    print(metrics_table(metrics, cfg.split, module.class_names, images))
    print(f"Saved in {output_dir}")
    return metrics


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
