"""The benchmark run: the chosen levels measured side by side for every conv type, then written and printed."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from sepdense.bench.data import benchmark_data
from sepdense.bench.deploy import DEPLOY_METHOD, benchmark_deploy
from sepdense.bench.layer import benchmark_layers
from sepdense.bench.model import benchmark_model
from sepdense.bench.plots import plot_layer_gap, plot_model_costs
from sepdense.bench.results import write_results
from sepdense.bench.speed import TABLE_COLUMNS, benchmark_speed, describe
from sepdense.errors import ConfigError
from sepdense.measure import environment
from sepdense.runtime import reuse_freed_memory
from sepdense.tables import format_value, markdown_table

log = logging.getLogger(__name__)
LEVELS = ("layer", "model", "data", "speed", "deploy")
COMPARISON_COLUMNS = """
Columns: each ratio is the conv type's figure divided by the baseline's in the same setting (below 1:
fewer parameters or MACs, lower latency; above 1 for images/s: faster). `share_of_mac_saving_realised`
= (1 − training-step time ratio) / (1 − MAC ratio): 1 when training time falls in proportion to the
MACs saved, 0 when it does not fall at all, negative when the conv type trains slower. `channels_last`:
NHWC memory layout (True) or PyTorch's default NCHW (False).
"""


def summary_line(summary: dict) -> str:
    return "; ".join(f"{k}: {format_value(v)}" for k, v in summary.items())


def machine_line(machine: dict) -> str:
    gpus = f", GPU: {', '.join(machine['gpus'])}" if machine["gpus"] else ", no GPU"
    return (f"{machine['processor']}, {machine['cpu_threads']} threads{gpus}; measured on {machine['device']}; "
            f"torch {machine['packages']['torch']}")  # fmt: skip


def model_and_data_overrides() -> list[str]:
    """This run's command-line overrides of the model and data, which a training command must repeat."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # called outside benchmark.py (tests)
        return []
    keys = ("model", "data")
    return [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").split("=")[0].split(".")[0] in keys]


def run_benchmark(cfg: DictConfig) -> dict:
    """Measure the levels of ``cfg.levels``, write the results into the run directory, print them."""
    unknown = [level for level in cfg.levels if level not in LEVELS]
    if unknown:
        raise ConfigError(f"levels={list(cfg.levels)} has unknown levels {unknown}; choose from {list(LEVELS)}.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.reuse_freed_memory:
        reuse_freed_memory()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    results: dict = {"machine": {**environment(), "device": device}, "config": config, "levels": {}, "summary": {}}
    tables: dict[str, str] = {}
    model_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "_target_"}

    if "layer" in cfg.levels:
        p = cfg.layer_level
        log.info("Layer level: %d grid points", len(p.channels) * len(p.sizes) * len(p.kernels))
        rows, comparison = benchmark_layers(p.channels, p.sizes, p.kernels, p.batch, p.min_run_time, device)
        results["levels"]["layer"], results["levels"]["layer_comparison"] = rows, comparison
        plot_layer_gap(comparison, out_dir / "layer_gap.png")
        tables[f"Layer level: one conv, batch {p.batch}"] = markdown_table(rows)
        tables["Layer level: each conv type ÷ the baseline"] = markdown_table(comparison)

    if "model" in cfg.levels:
        p = cfg.model_level
        log.info("Model level: %s on %s", model_kwargs, device)
        rows, comparison = benchmark_model(
            model_kwargs, device, p.train_batch, p.inference_batch, p.min_run_time, p.compile, p.memory
        )
        results["levels"]["model"], results["levels"]["model_comparison"] = rows, comparison
        plot_model_costs(rows, out_dir / "model_costs.png")
        tables[f"Model level: train batch {p.train_batch}, inference batch {p.inference_batch}"] = markdown_table(rows)
        tables["Model level: each conv type ÷ the baseline"] = markdown_table(comparison) + COMPARISON_COLUMNS

    if "data" in cfg.levels:
        p = cfg.data_level
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.prepare_data()
        net = hydra.utils.instantiate(cfg.model, num_classes=datamodule.num_classes)
        rows, summary = benchmark_data(datamodule, net, p.warmup_batches, p.batches, p.baseline_workers, p.train_steps)
        results["levels"]["data"], results["summary"]["data"] = rows, summary
        tables["Data pipeline (images/s to the training step)"] = markdown_table(rows) + "\n" + summary_line(summary)

    if "speed" in cfg.levels:
        p = OmegaConf.to_container(cfg.speed_level, resolve=True)
        log.info("Speed level: %s on %s, modes %s, compile modes %s", model_kwargs, device, p["modes"],
                 p["compile_modes"])  # fmt: skip
        speed = benchmark_speed(model_kwargs, device, **p, command_overrides=model_and_data_overrides())
        results["levels"]["speed"], results["levels"]["speed_comparison"] = speed["rows"], speed["comparison"]
        results["summary"]["speed"] = {"fastest": speed["fastest"], "skipped": speed["skipped"], "peak": speed["peak"]}
        title = f"Training step, batch {p['batch']}: every way to run it, and the projected training run"
        tables[title] = markdown_table(speed["rows"], TABLE_COLUMNS) + describe(speed, p["projection"], p["loss_rtol"])
        tables["Training step: ratios"] = markdown_table(speed["comparison"])

    if "deploy" in cfg.levels:
        p = cfg.deploy_level
        log.info("Deploy level: %s in ONNX Runtime on the CPU, fp32 and int8", model_kwargs)
        rows, comparison = benchmark_deploy(model_kwargs, p.batch, p.min_run_time, p.calibration_images, p.memory)
        results["levels"]["deploy"], results["levels"]["deploy_comparison"] = rows, comparison
        tables["Deployed: ONNX Runtime on the CPU, random weights"] = (
            markdown_table(rows) + f"\nMethod: {DEPLOY_METHOD}.\n"
        )
        tables["Deployed: ratios"] = markdown_table(comparison)

    write_results(out_dir, results, tables)
    print(f"Machine: {machine_line(results['machine'])}\n")
    print((out_dir / "results.md").read_text())
    print(f"Results in {out_dir}")
    return results
