"""Deploy level: every conv type exported to ONNX and run by ONNX Runtime on the CPU, in fp32 and int8.

Random weights of the configured network (timing does not depend on them); the int8 model is
calibrated on random images for the same reason. Per conv type and precision: batch-1 latency
with one thread and with all cores, images/s at a larger batch, the model file's size and the peak
memory of an inference session (in a fresh process, ``python -m sepdense.bench.deploy``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sepdense.deployment import (
    OPSET,
    PRECISIONS,
    QUANTIZATION,
    SESSION_LATENCY_METHOD,
    export_onnx,
    open_session,
    quantize_int8,
    require_deploy_packages,
    run_session,
    session_latency_ms,
)

DEPLOY_METHOD = f"{SESSION_LATENCY_METHOD}; images/s: the same at the throughput batch; int8: {QUANTIZATION}"


def benchmark_deploy(
    model_kwargs: dict,
    batch: int,
    min_run_time: float,
    calibration_images: int,
    memory: bool = True,
    opset: int = OPSET,
) -> tuple[list[dict], list[dict]]:
    """Rows for every registered conv type and precision, and each conv type's ratios to the baseline's."""
    require_deploy_packages()
    from sepdense.measure import count_macs, count_parameters
    from sepdense.models import DenseNet, ordered_conv_types

    cores = os.cpu_count() or 1
    calibration = np.random.default_rng(0).standard_normal((calibration_images, 3, 32, 32)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files, cost = {}, {}
        for conv in ordered_conv_types():
            net = DenseNet(**{**model_kwargs, "conv": conv}).eval()
            cost[conv] = {"params": count_parameters(net), "macs": count_macs(net)}
            files[conv] = {"fp32": Path(tmp) / f"{conv}.onnx", "int8": Path(tmp) / f"{conv}.int8.onnx"}
            export_onnx(net, files[conv]["fp32"], opset)
            quantize_int8(files[conv]["fp32"], files[conv]["int8"], calibration)
        # Timed precision by precision with the conv types next to each other, so that a change in the
        # machine's load between measurements moves both sides of a ratio alike.
        for precision in PRECISIONS:
            for conv, paths in files.items():
                path = paths[precision]
                row = {"conv": conv, "precision": precision, **cost[conv], "file_mb": path.stat().st_size / 1e6,
                       "latency_b1_1thread_ms": session_latency_ms(open_session(path, 1), 1, min_run_time),
                       f"latency_b1_{cores}threads_ms": session_latency_ms(open_session(path, cores), 1, min_run_time),
                       f"images_per_s_b{batch}": batch * 1000 / session_latency_ms(open_session(path, cores), batch,
                                                                                   min_run_time, warmup=2)}  # fmt: skip
                if memory:
                    row[f"session_peak_mb_b{batch}"] = session_memory_in_subprocess(path, batch, cores)
                rows.append(row)
    return rows, deploy_comparison(rows)


def deploy_comparison(rows: list[dict]) -> list[dict]:
    """Each conv type ÷ the baseline at each precision (the MAC ratio beside the measured ones), and int8 ÷ fp32."""
    from sepdense.models import BASELINE_CONV

    by_key = {(r["conv"], r["precision"]): r for r in rows}
    measured = [k for k in rows[0] if k.endswith(("_ms", "_mb")) or k.startswith("images_per_s")] if rows else []
    comparison = []
    for (conv, precision), row in by_key.items():
        others = (
            [(f"{conv} ÷ {BASELINE_CONV}", by_key.get((BASELINE_CONV, precision)))] if conv != BASELINE_CONV else []
        )
        if precision != "fp32":
            others.append((f"{conv} {precision} ÷ fp32", by_key.get((conv, "fp32"))))
        for name, base in others:
            if base is None:
                continue
            ratios = {f"{k}_ratio": row[k] / base[k] for k in measured if k in row and k in base}
            comparison.append(
                {"ratio": name, "precision": precision, "mac_ratio": row["macs"] / base["macs"], **ratios}
            )
    return comparison


def session_memory_in_subprocess(path: Path, batch: int, threads: int) -> float:
    """Peak resident memory (MB) of creating a session for ``path`` and running one batch, in a fresh process."""
    args = [sys.executable, "-m", "sepdense.bench.deploy", str(path), str(batch), str(threads)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])["session_peak_mb"]


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:")) / 2**10  # kB


def session_memory(path: Path, batch: int, threads: int) -> dict:
    """The process's peak resident set while a session is created and runs a batch, minus its resident set before.

    Linux only (``/proc``); this process has loaded numpy and onnxruntime but not torch.
    """
    import onnxruntime  # noqa: F401  (loaded before the baseline: the library is not the session's)

    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set: counted from here
    before = _status_mb("VmRSS")
    session = open_session(path, threads)
    run_session(session, np.zeros((batch, 3, 32, 32), dtype=np.float32))
    peak = _status_mb("VmHWM")
    return {"rss_before_mb": before, "peak_rss_mb": peak, "session_peak_mb": peak - before}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("batch", type=int)
    parser.add_argument("threads", type=int)
    a = parser.parse_args()
    print(json.dumps(session_memory(a.path, a.batch, a.threads)))
