"""Measure the cost of standard vs depthwise-separable convolutions and of the data pipeline.

`python benchmark.py` writes results.json, <level>.csv, results.md and plots into its run directory.
"""

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from sepdense.bench.data import benchmark_data
from sepdense.bench.results import format_value, markdown_table, write_results
from sepdense.cli import run_reporting_user_errors

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(cfg.paths.output_dir)
    machine = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    results: dict = {"machine": machine, "config": OmegaConf.to_container(cfg, resolve=True), "levels": {}}
    tables: dict[str, str] = {}
    if "data" in cfg.levels:
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.prepare_data()
        net = hydra.utils.instantiate(cfg.model, num_classes=datamodule.num_classes)
        p = cfg.data_level
        rows, summary = benchmark_data(datamodule, net, p.warmup_batches, p.batches, p.baseline_workers, p.train_steps)
        results["levels"]["data"] = rows
        results["data_summary"] = summary
        tables["Data pipeline (images/s to the training step)"] = markdown_table(rows) + "\n" + "; ".join(
            f"{k}: {format_value(v)}" for k, v in summary.items()
        )
    write_results(out_dir, results, tables)
    print((out_dir / "results.md").read_text())
    print(f"Results in {out_dir}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    run_reporting_user_errors(run, cfg)


if __name__ == "__main__":
    main()
