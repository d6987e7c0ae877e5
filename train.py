"""Train the DenseNet on CIFAR-10: `python train.py model.conv=separable`, or sweep with `-m`."""

import hydra
from omegaconf import DictConfig

from sepdense.cli import run_reporting_user_errors
from sepdense.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_reporting_user_errors(train, cfg)
    # A sweeper (e.g. Optuna) optimises the value returned here.
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
