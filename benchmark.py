"""Measure the cost of every conv type against standard convolutions, and of the data pipeline.

`python benchmark.py` writes results.json, <level>.csv, results.md and PNG plots into its run
directory and prints the tables. All conv types are measured side by side in one run, so their
ratios hold on a noisy machine.
"""

import hydra
from omegaconf import DictConfig

from sepdense.cli import run_reporting_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    # Imported once Hydra has composed the config, so that a mistyped override is reported at once.
    from sepdense.bench.run import run_benchmark

    run_reporting_user_errors(run_benchmark, cfg)


if __name__ == "__main__":
    main()
