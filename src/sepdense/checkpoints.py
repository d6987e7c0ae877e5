"""Reading the files a user hands us (checkpoints, pickled data batches, configs) as data only, never as code.

Every entry point reads checkpoints through ``load_checkpoint`` and pickled data through
``load_plain_pickle``, so "nothing is unpickled beyond tensors and plain values" holds in this one
place; a run that resumes picks the newest of its checkpoints that loads (``newest_loadable``).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sepdense.errors import UserError

# The objects a pickled numpy array needs (the official CIFAR-10 batches are pickled dicts of arrays,
# lists, bytes and ints); anything else in such a file is refused.
NUMPY_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}  # fmt: skip
# What a checkpoint may name as its network (``hyper_parameters.net._target_``): it is instantiated on loading.
NETWORK_PREFIX = "sepdense.models."


class UnsafeFileError(UserError):
    """A file holds objects whose loading could run code."""


class BrokenCheckpointError(UserError):
    """A checkpoint file is truncated, damaged or not a checkpoint."""


def _unsafe(path: Path | str, what: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{path} holds {what} that could run code when loaded, so nothing was loaded from it; use a file written "
        f"by sepdense (or by torchvision, for CIFAR-10 batches), or one whose origin you trust and re-save it as "
        f"plain tensors."
    )


def check_targets(config: Any, allowed_prefix: str, path: Path | str, key: str = "") -> None:
    """Refuse a config from a file whose ``_target_`` (anywhere in it) lies outside ``allowed_prefix``.

    Hydra instantiates ``_target_`` strings, so a checkpoint or a saved run config naming
    ``os.system`` would run a command when the model or data is rebuilt from it.
    """
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if target is not None and not str(target).startswith(allowed_prefix):
            raise _unsafe(path, f"a config ({key or 'top level'}) whose _target_ is {target!r}, a callable")
        for name, value in config.items():
            check_targets(value, allowed_prefix, path, f"{key}.{name}" if key else str(name))
    elif isinstance(config, Iterable) and not isinstance(config, str | bytes):
        for i, value in enumerate(config):
            check_targets(value, allowed_prefix, path, f"{key}[{i}]")


def load_checkpoint(path: Path | str, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path`` with tensors and plain values only (``torch.load(weights_only=True)``).

    Raises ``UnsafeFileError`` for a file holding other objects and ``BrokenCheckpointError`` for one
    that is truncated or not a checkpoint, each with one sentence naming the file. ``mmap`` maps
    the tensors instead of reading them (cheap when only a counter is wanted).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise BrokenCheckpointError(f"{path} does not exist; give a .ckpt file or a run directory.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err) or "Unsupported global" in str(err):
            raise _unsafe(path, "objects other than tensors and plain values") from None
        raise _broken(path, err) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        raise _broken(path, err) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise BrokenCheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict); give a .ckpt "
                                    f"file saved by a training run.")  # fmt: skip
    check_targets(checkpoint.get("hyper_parameters", {}), NETWORK_PREFIX, path, "hyper_parameters")
    return checkpoint


def _broken(path: Path, err: BaseException) -> BrokenCheckpointError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return BrokenCheckpointError(
        f"{path} is not a readable checkpoint (truncated or damaged: {reason[:160]}); copy it again, or resume from "
        f"an earlier checkpoint of the run."
    )


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY_ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def load_plain_pickle(path: Path | str) -> Any:
    """A pickle that holds only numbers, strings, bytes, lists, dicts and numpy arrays (e.g. a CIFAR-10 batch)."""
    data = Path(path).read_bytes()
    try:
        return _PlainUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        if "." in str(err) and " " not in str(err):  # a global that find_class refused
            raise _unsafe(path, f"an object of type {err}") from None
        raise


def newest_loadable(candidates: list[Path], report: Any = print) -> Path | None:
    """The newest (by modification time) of ``candidates`` that loads; each that does not is named via ``report``.

    A broken file is passed over for an older one; a file that holds code is not (``UnsafeFileError``):
    a run directory with such a file in it is not to be trusted at all.
    """
    for path in sorted((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        try:
            load_checkpoint(path, mmap=True)
        except BrokenCheckpointError as err:
            report(f"Skipping {path}: {err}")
            continue
        return path
    return None
