"""Measure the cost of standard vs depthwise-separable convolutions and of the data pipeline.

`python benchmark.py` writes results.json, <level>.csv, results.md and PNG plots into its run
directory and prints the tables. Both conv types are measured side by side in one run, so their
ratios hold on a noisy machine.
"""

import logging
import platform
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from sepdense.bench.data import benchmark_data
from sepdense.bench.layer import benchmark_layers
from sepdense.bench.model import benchmark_model
from sepdense.bench.plots import plot_layer_gap, plot_model_costs
from sepdense.bench.results import format_value, markdown_table, write_results
from sepdense.cli import run_reporting_user_errors
from sepdense.errors import ConfigError

log = logging.getLogger(__name__)
LEVELS = ("layer", "model", "data")


def summary_line(summary: dict) -> str:
    return "; ".join(f"{k}: {format_value(v)}" for k, v in summary.items())


def machine_info(device: str) -> dict:
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
            "processor": platform.processor() or platform.machine(), "python": platform.python_version()}  # fmt: skip
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run(cfg: DictConfig) -> dict:
    unknown = [level for level in cfg.levels if level not in LEVELS]
    if unknown:
        raise ConfigError(f"levels={list(cfg.levels)} has unknown levels {unknown}; choose from {list(LEVELS)}.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine_info(device), "config": OmegaConf.to_container(cfg, resolve=True),
                     "levels": {}, "summary": {}}  # fmt: skip
    tables: dict[str, str] = {}
    model_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "_target_"}

    if "layer" in cfg.levels:
        p = cfg.layer_level
        log.info("Layer level: %d grid points", len(p.channels) * len(p.sizes) * len(p.kernels))
        rows, comparison = benchmark_layers(p.channels, p.sizes, p.kernels, p.batch, p.min_run_time, device)
        results["levels"]["layer"], results["levels"]["layer_comparison"] = rows, comparison
        plot_layer_gap(comparison, out_dir / "layer_gap.png")
        tables[f"Layer level: one conv, batch {p.batch}"] = markdown_table(rows)
        tables["Layer level: separable ÷ standard"] = markdown_table(comparison)

    if "model" in cfg.levels:
        p = cfg.model_level
        log.info("Model level: %s on %s", model_kwargs, device)
        rows, comparison = benchmark_model(
            model_kwargs, device, p.train_batch, p.inference_batch, p.min_run_time, p.compile, p.memory
        )
        results["levels"]["model"], results["levels"]["model_comparison"] = rows, comparison
        plot_model_costs(rows, out_dir / "model_costs.png")
        tables[f"Model level: train batch {p.train_batch}, inference batch {p.inference_batch}"] = markdown_table(rows)
        tables["Model level: separable ÷ standard"] = markdown_table(comparison)

    if "data" in cfg.levels:
        p = cfg.data_level
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.prepare_data()
        net = hydra.utils.instantiate(cfg.model, num_classes=datamodule.num_classes)
        rows, summary = benchmark_data(datamodule, net, p.warmup_batches, p.batches, p.baseline_workers, p.train_steps)
        results["levels"]["data"], results["summary"]["data"] = rows, summary
        tables["Data pipeline (images/s to the training step)"] = markdown_table(rows) + "\n" + summary_line(summary)

    write_results(out_dir, results, tables)
    print(f"Machine: {summary_line(results['machine'])}\n")
    print((out_dir / "results.md").read_text())
    print(f"Results in {out_dir}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    run_reporting_user_errors(run, cfg)


if __name__ == "__main__":
    main()
