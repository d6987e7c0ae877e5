"""Deployment with ONNX Runtime: a network exported to ONNX, statically quantized to int8, and run in a session.

Shared by ``python -m sepdense.export``, ``evaluate engine=onnxruntime`` and the benchmark's deploy level,
so that all three measure the same exported file. Importing it loads neither torch nor onnxruntime (the
benchmark measures the memory of a session in a process that holds nothing else).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sepdense.errors import UserError
from sepdense.tables import write_json

log = logging.getLogger(__name__)
# 18: the opset torch.onnx's exporter writes natively (its TORCHLIB_OPSET); another is reached by a converter.
OPSET = 18
INPUT, OUTPUT = "images", "logits"
PRECISIONS = ("fp32", "int8")
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
# What export and evaluate engine=onnxruntime record in a training run's directory, per precision.
DEPLOYED_FILE = "deployed.json"
DEPLOY_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # onnxscript: torch.onnx's exporter builds the graph with it
INSTALL_HINT = 'pip install -e ".[deploy]"'
QUANTIZATION = "static int8 (QDQ), weights per channel, activations per tensor, min-max calibration"
SESSION_LATENCY_METHOD = "ONNX Runtime CPU session, batch 1, median of repeated calls after 10 warm-up calls"


class MissingDeployPackages(UserError):
    """onnx, onnxruntime or onnxscript is not installed."""


def require_deploy_packages() -> None:
    """Import the packages deployment needs, or say in one line what to install."""
    for name in DEPLOY_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise MissingDeployPackages(
                f"Deployment needs {', '.join(DEPLOY_PACKAGES)}, and {name} is not installed; install them with "
                f"{INSTALL_HINT} (or pip install {' '.join(DEPLOY_PACKAGES)})."
            ) from None


@contextlib.contextmanager
def info_hidden() -> Iterator[None]:
    """The exporter's optimiser and the quantizer log every step at INFO (hundreds of lines); keep their warnings."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def export_onnx(net: Any, path: Path, opset: int = OPSET) -> dict[str, Any]:
    """Write ``net`` (eval mode, every exactly foldable BatchNorm folded) to ``path`` with a dynamic batch dimension.

    Returns what was exported: the opset and how many BatchNorms were folded and remain (the remaining
    ones precede a ReLU or follow a concatenation, where folding is not exact).
    """
    import torch

    from sepdense.models.fusion import count_batchnorms, fold_batchnorms

    folded = fold_batchnorms(net.cpu()).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, 32, 32)  # not 1: torch.export would take a batch of 1 for a constant
    # The exporter prints its progress to stdout, which is for results here, and logs each pass at INFO.
    with contextlib.redirect_stdout(io.StringIO()), info_hidden(), torch.no_grad():
        torch.onnx.export(folded, (example,), str(path), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=opset,
                          external_data=False)  # fmt: skip
    before, after = count_batchnorms(net), count_batchnorms(folded)
    return {"opset": opset, "batchnorms_folded": before - after, "batchnorms_left": after}


def batches(images: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), batch):
        yield np.ascontiguousarray(images[start : start + batch], dtype=np.float32)


def quantize_int8(fp32_path: Path, int8_path: Path, calibration_images: np.ndarray, batch: int = 32) -> None:
    """Static int8 quantization of an exported model (:data:`QUANTIZATION`), calibrated on ``calibration_images``.

    ``calibration_images`` are normalised training images (never test images: the calibration
    ranges are fitted to them). ``quant_pre_process`` runs first, as ONNX Runtime advises: shape
    inference and graph optimisation, so that the quantizer sees fused Conv+ReLU nodes.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = ({INPUT: b} for b in batches(calibration_images, batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp, info_hidden():
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(str(prepared), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        # A BatchNorm's scale is one value per channel (axis 0); the quantizer assumes axis 1.
                        extra_options={"QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0}})  # fmt: skip


def open_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with all graph optimisations; ``threads`` intra-op threads (None: all cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are not the user's
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session: Any, images: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT], {INPUT: np.ascontiguousarray(images, dtype=np.float32)})[0]


def session_network(session: Any) -> Any:
    """An ``nn.Module`` that runs ``session`` in place of a network: images in, logits out, on the images' device.

    Defined on first use, so that importing this module does not load torch.
    """
    import torch
    from torch import nn

    class OnnxRuntimeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.session = session

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            logits = run_session(self.session, images.detach().float().cpu().numpy())
            return torch.from_numpy(logits).to(images.device)

    return OnnxRuntimeNet()


def compare_logits(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How far ``other``'s logits are from ``reference``'s: largest difference (absolute, and relative to the
    largest reference logit) and the share of images whose top-1 class agrees."""
    difference = float(np.abs(other - reference).max())
    return {
        "max_logit_diff": difference,
        "max_logit_diff_relative": difference / max(float(np.abs(reference).max()), 1e-12),
        "top1_agreement": float((other.argmax(1) == reference.argmax(1)).mean()),
    }


def session_latency_ms(session: Any, batch: int = 1, min_run_time: float = 0.5, warmup: int = 10) -> float:
    """Milliseconds per call on a batch of ``batch`` random images, as :data:`SESSION_LATENCY_METHOD` says."""
    images = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    for _ in range(warmup):
        run_session(session, images)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < min_run_time:
        begin = time.perf_counter()
        run_session(session, images)
        times.append(time.perf_counter() - begin)
    return 1000 * statistics.median(times)


def record_deployed(run_dir: Path, precision: str, values: dict[str, Any]) -> None:
    """Merge ``values`` into the ``precision`` entry of a training run's :data:`DEPLOYED_FILE` (the report reads it).

    The run directory was handed to us: the file is written under its fixed name, inside ``run_dir``, replacing
    a symbolic link there rather than writing through it; a precision is one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    run_dir = Path(run_dir)
    recorded = read_deployed(run_dir)
    recorded[precision] = {**recorded.get(precision, {}), **values}
    write_json(run_dir / DEPLOYED_FILE, recorded, sort_keys=True, inside=run_dir)


def read_deployed(run_dir: Path) -> dict[str, dict[str, Any]]:
    """What a run recorded of its deployment; a link or an unreadable file counts as nothing recorded."""
    path = Path(run_dir) / DEPLOYED_FILE
    if path.is_symlink() or not path.is_file():
        return {}
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def split_images(datamodule: Any, split: str, count: int, seed: int = 0) -> np.ndarray:
    """``count`` normalised images of a data module's ``split`` (a seeded random choice; the training split of an
    image folder is stored class by class)."""
    datamodule.setup()
    images = datamodule.splits[split][0]
    chosen = np.random.default_rng(seed).permutation(len(images))[:count]
    return datamodule.on_after_batch_transfer((images[np.sort(chosen)],), 0)[0].numpy()


def deploy_network(
    net: Any, datamodule: Any, out_dir: Path, quantize: str | None, calibration_images: int, opset: int = OPSET
) -> dict[str, Any]:
    """Export ``net`` to ``out_dir``/model.onnx and, with ``quantize="int8"``, quantize it beside it, calibrated on
    ``calibration_images`` images of the training split. Returns the files by precision and what was exported."""
    require_deploy_packages()
    out_dir = Path(out_dir)
    files = {"fp32": out_dir / MODEL_FILES["fp32"]}
    info = export_onnx(net, files["fp32"], opset)
    log.info("Exported %s (opset %d, %d BatchNorms folded)", files["fp32"], opset, info["batchnorms_folded"])
    if quantize == "int8":
        files["int8"] = out_dir / MODEL_FILES["int8"]
        quantize_int8(files["fp32"], files["int8"], split_images(datamodule, "train", calibration_images))
        info["calibration"] = f"{calibration_images} training images"
        log.info("Quantized %s (%s, %s)", files["int8"], QUANTIZATION, info["calibration"])
    return {"files": files, **info}
