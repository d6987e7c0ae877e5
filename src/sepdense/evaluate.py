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
from omegaconf import DictConfig

from sepdense.cli import quiet_libraries, run_reporting_user_errors
from sepdense.errors import ConfigError
from sepdense.module import ImageClassifier
from sepdense.runs import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    is_run_dir,
    read_config,
    write_confusion,
    write_metrics,
    write_predictions,
)
from sepdense.tables import markdown_table
from sepdense.train import resolve_precision, scalars

log = logging.getLogger("sepdense")
SPLITS = ("test", "val")


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
    """``data=...`` from the command line if given, else the data the run was trained on."""
    overridden = any(o.lstrip("+~").startswith("data") for o in HydraConfig.get().overrides.task)
    if overridden or run_dir is None:
        return cfg.data
    return read_config(run_dir).data


def evaluate(cfg: DictConfig) -> dict[str, float]:
    quiet_libraries()
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split} is not a split; use one of: {', '.join(SPLITS)}.")
    checkpoint, run_dir = find_checkpoint(str(cfg.ckpt_path))
    try:
        module = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu", compile=False, cuda_graph=False)
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{checkpoint} was not saved by this version of sepdense ({err}); "
                          f"evaluate a checkpoint of a newer run.") from err  # fmt: skip
    datamodule = hydra.utils.instantiate(data_config(cfg, run_dir))
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
