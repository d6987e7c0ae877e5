"""Export a checkpoint for deployment: `python -m sepdense.export ckpt_path=<run dir | .ckpt> [quantize=int8]`.

Writes ``model.onnx`` (BatchNorm folded where that is exact, a dynamic batch dimension, the opset
named) and, with ``quantize=int8``, ``model.int8.onnx`` (static int8, calibrated on training images)
into its own run directory; checks each against PyTorch on test images (largest logit difference,
top-1 agreement) and times it at batch 1, prints that and saves it in ``export.json``. A checkpoint
of a training run also gets these figures in the run's ``deployed.json``, for its report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from sepdense.cli import find_user_error, quiet_libraries, run_reporting_user_errors
from sepdense.errors import ConfigError
from sepdense.evaluate import checkpoint_path, model_and_data
from sepdense.runs import contents, remove_run_without_results
from sepdense.tables import markdown_table, write_json

log = logging.getLogger("sepdense")
EXPORT_FILE = "export.json"
CHECK_BATCH = 64


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path``; a mistake ends in a UserError and leaves no run directory."""
    quiet_libraries()
    output_dir = Path(cfg.paths.output_dir)
    before = contents(output_dir)
    try:
        return _export(cfg, output_dir)
    except Exception as err:
        if find_user_error(err) is not None:
            remove_run_without_results(output_dir, before)  # what it added only; hydra.run.dir=. keeps the rest
        raise


def _export(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    if cfg.quantize not in (None, "int8"):
        raise ConfigError(f"quantize={cfg.quantize} is not supported; use quantize=int8 or leave it out.")
    checkpoint, run_dir = checkpoint_path(cfg)
    # Loaded after the checks above, so that a mistyped value is reported before torch loads.
    import numpy as np
    import torch

    from sepdense.deployment import (
        QUANTIZATION,
        SESSION_LATENCY_METHOD,
        batches,
        compare_logits,
        deploy_network,
        open_session,
        record_deployed,
        require_deploy_packages,
        run_session,
        session_latency_ms,
        split_images,
    )
    from sepdense.runtime import reuse_freed_memory

    require_deploy_packages()
    if cfg.reuse_freed_memory:
        reuse_freed_memory()
    module, datamodule = model_and_data(cfg, checkpoint, run_dir)
    deployed = deploy_network(module.net, datamodule, output_dir, cfg.quantize, cfg.calibration_images, cfg.opset)
    images = split_images(datamodule, "test", cfg.check_images)
    with torch.no_grad():
        reference = np.concatenate(
            [module.net.eval()(torch.from_numpy(b)).numpy() for b in batches(images, CHECK_BATCH)]
        )
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        **{k: v for k, v in deployed.items() if k != "files"},
        "check": f"{len(images)} test images in batches of {CHECK_BATCH}, against the PyTorch model in float32",
        "latency_method": SESSION_LATENCY_METHOD + ", 1 thread",
        "quantization": QUANTIZATION if cfg.quantize else None,
        "precisions": {},
    }
    for precision, path in deployed["files"].items():
        logits = np.concatenate([run_session(open_session(path), b) for b in batches(images, CHECK_BATCH)])
        figures = {"file": str(path), "file_mb": path.stat().st_size / 1e6, **compare_logits(reference, logits),
                   "latency_b1_ms": session_latency_ms(open_session(path, threads=1))}  # fmt: skip
        results["precisions"][precision] = figures
        if run_dir is not None:
            record_deployed(run_dir, precision, {**figures, "export": str(output_dir), "opset": cfg.opset})
    write_json(output_dir / EXPORT_FILE, results)
    rows = [{"precision": p, "file (MB)": f"{f['file_mb']:.2f}",
             "largest logit difference": f"{f['max_logit_diff']:.3g}",
             "relative to the largest logit": f"{f['max_logit_diff_relative']:.2e}",
             "top-1 agreement (%)": f"{100 * f['top1_agreement']:.2f}",
             "latency batch 1 (ms)": f"{f['latency_b1_ms']:.2f}"}
            for p, f in results["precisions"].items()]  # fmt: skip
    print(f"{checkpoint} exported with opset {cfg.opset}, {deployed['batchnorms_folded']} BatchNorms folded "
          f"({deployed['batchnorms_left']} left: they follow a concatenation or precede a ReLU).")  # fmt: skip
    print(f"Checked on {results['check']}; latency: {results['latency_method']}.")
    if cfg.quantize:
        print(f"int8: {QUANTIZATION}, calibrated on {deployed['calibration']}.")
    print(markdown_table(rows))
    print(f"Saved in {output_dir}")
    return results


@hydra.main(version_base="1.3", config_path="../../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_reporting_user_errors(export, cfg)


if __name__ == "__main__":
    main()
