"""Train the DenseNet on CIFAR-10: `python train.py model.conv=separable`, or sweep with `-m`."""

import hydra
from omegaconf import DictConfig

from sepdense.cli import run_reporting_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported once Hydra has composed the config: a mistyped override is reported in about a second,
    # not after the ~10 s that loading torch and Lightning take on a small machine.
    from sepdense.train import train

    metrics = run_reporting_user_errors(train, cfg)
    # A sweeper (e.g. Optuna) optimises the value returned here.
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
