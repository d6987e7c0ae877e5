"""Reading the files a user hands us (checkpoints, pickled data batches, configs) as data only, never as code.

Every entry point reads checkpoints through ``load_checkpoint`` and pickled data through
``load_plain_pickle``, so "nothing is unpickled beyond tensors and plain values" holds in this one
place; a run that resumes picks the newest of its checkpoints that loads (``newest_loadable``).
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sepdense.errors import UserError
from sepdense.runs import CONFIG_FILE

# The objects a pickled numpy array needs (the official CIFAR-10 batches are pickled dicts of arrays,
# lists, bytes and ints); anything else in such a file is refused.
NUMPY_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}  # fmt: skip
# The only callables a file may name as a ``_target_`` (Hydra calls it): the network a checkpoint is rebuilt
# with, and the data a saved run config describes. Exact names, never prefixes: Hydra walks dotted names
# through attributes, so "sepdense.models.densenet.torch.os.system" would reach os.system. Kept as strings
# (this module imports neither); tests/test_faults.py checks that they name the real classes.
NETWORK_TARGETS = frozenset({"sepdense.models.DenseNet", "sepdense.models.densenet.DenseNet"})
DATA_TARGETS = frozenset({
    "sepdense.data.CIFAR10DataModule", "sepdense.data.datamodule.CIFAR10DataModule",
    *(f"sepdense.data{module}.{name}" for module in ("", ".sources") for name in ("OfficialCIFAR10", "ImageFolder",
                                                                                "Synthetic")),
})  # fmt: skip


# Deeper than any chain of references in our own configs (seed, paths): a loop.
MAX_REFERENCE_DEPTH = 8


class UnsafeFileError(UserError):
    """A file holds objects whose loading could run code."""


class BrokenCheckpointError(UserError):
    """A checkpoint file is truncated, damaged or not a checkpoint."""


class BrokenConfigError(UserError):
    """A saved config lacks what is read from it, or refers to values it does not have."""


def _unsafe(path: Path | str, what: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{path} holds {what} that could run code when loaded, so nothing was loaded from it; use a file written "
        f"by sepdense (or by torchvision, for CIFAR-10 batches), or one whose origin you trust and re-save it as "
        f"plain tensors."
    )


# ``${a.b}``: a reference to another value of the same file. Anything else between ``${`` and ``}`` (``oc.create:``,
# ``oc.env:``, a nested ``${``) calls a resolver, which could build a ``_target_`` after it was checked.
INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
NODE_REFERENCE = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)*")


def _walk(config: Any, key: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, value) of every mapping and leaf in ``config``, the top level first."""
    yield key, config
    if isinstance(config, Mapping):
        for name, value in config.items():
            yield from _walk(value, f"{key}.{name}" if key else str(name))
    elif isinstance(config, Iterable) and not isinstance(config, str | bytes):
        for i, value in enumerate(config):
            yield from _walk(value, f"{key}[{i}]")


def check_targets(config: Any, allowed: frozenset[str] | None, path: Path | str, key: str = "",
                  references: bool = False) -> None:  # fmt: skip
    """Refuse a config from a file with a ``_target_`` (anywhere in it) that is not one of ``allowed`` (None: any),
    or with an interpolation: none at all, or with ``references`` only references to its own values (``${seed}``).

    Hydra instantiates ``_target_`` strings, so a checkpoint or a saved run config naming
    ``os.system`` would run a command when the model or data is rebuilt from it; and it resolves
    interpolations first, so ``${oc.create:...}`` could name one after this check.
    """
    for name, value in _walk(config, key):
        where = name or "top level"
        if isinstance(value, Mapping):
            target = value.get("_target_")
            if target is not None and allowed is not None and str(target) not in allowed:
                raise _unsafe(path, f"a config ({where}) whose _target_ is {target!r}, a callable")
        elif isinstance(value, str) and "${" in value:
            rest = INTERPOLATION.sub(lambda m: "" if references and NODE_REFERENCE.fullmatch(m[1]) else m[0], value)
            if "${" in rest:
                raise _unsafe(path, f"an interpolation in a config value ({where}: {value[:80]!r})")


def plain_config(saved: DictConfig | Mapping, key: str, allowed: frozenset[str], path: Path | str) -> DictConfig:
    """The part ``key`` of a config read from ``path``, resolved on its own and checked, as plain values.

    Only references to values of the same file are followed (``data.source.root: ${paths.data_dir}/x``),
    here, not by OmegaConf: no resolver is called, and a reference that reaches one (``${oc.create:...}``)
    is refused. The resolved part may hold no ``_target_`` outside ``allowed``; what is returned is a new
    config, without a parent: instantiating it runs nothing the file chose.
    """
    container = OmegaConf.to_container(saved, resolve=False) if isinstance(saved, DictConfig) else dict(saved)
    part = _lookup(container, key, path)
    if not isinstance(part, Mapping):
        raise BrokenConfigError(f"{path} has no {key} config; evaluate the checkpoint with data=<name> instead.")
    resolved = _follow_references(part, container, path, key)
    check_targets(resolved, allowed, path, key)
    return OmegaConf.create(resolved)


def _lookup(container: Mapping, reference: str, path: Path | str) -> Any:
    value: Any = container
    for name in reference.split("."):
        if not isinstance(value, Mapping) or name not in value:
            raise BrokenConfigError(f"{path} refers to {reference}, which it does not have; copy the run's "
                                    f"{CONFIG_FILE} again, or give data=<name>.")  # fmt: skip
        value = value[name]
    return value


def _follow_references(value: Any, root: Mapping, path: Path | str, where: str, depth: int = 0) -> Any:
    """``value`` with each ``${a.b}`` replaced by that value of ``root`` (the whole file); any other interpolation,
    or a chain of references deeper than ``MAX_REFERENCE_DEPTH`` (a loop), is refused."""
    if depth > MAX_REFERENCE_DEPTH:
        raise _unsafe(path, f"a loop of references in a config value ({where})")
    if isinstance(value, Mapping):
        return {k: _follow_references(v, root, path, f"{where}.{k}", depth) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_follow_references(v, root, path, f"{where}[{i}]", depth) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def target(match: re.Match) -> Any:
        if not NODE_REFERENCE.fullmatch(match[1]):
            raise _unsafe(path, f"an interpolation in a config value ({where}: {value[:80]!r})")
        return _follow_references(_lookup(root, match[1], path), root, path, where, depth + 1)

    whole = INTERPOLATION.fullmatch(value)
    if whole:  # the value is another node, of its own type
        return target(whole)
    result = INTERPOLATION.sub(lambda m: str(target(m)), value)
    if "${" in result:
        raise _unsafe(path, f"an interpolation in a config value ({where}: {value[:80]!r})")
    return result


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
    check_targets(checkpoint.get("hyper_parameters", {}), NETWORK_TARGETS, path, "hyper_parameters")
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
    """Of ``candidates``, the one that loads and is furthest into training (by its step, not by file times, which
    a copy between machines can reorder); each that does not load is named via ``report``.

    A broken file is passed over; a file that holds code is not (``UnsafeFileError``): a run
    directory with such a file in it is not to be trusted at all.
    """
    progress = {}
    for path in sorted(p for p in candidates if p.is_file()):
        try:
            saved = load_checkpoint(path, mmap=True)
        except BrokenCheckpointError as err:
            report(f"Skipping {path}: {err}")
            continue
        progress[path] = (int(saved.get("global_step", 0)), int(saved.get("epoch", 0)), path.stat().st_mtime_ns)
    return max(progress, key=progress.__getitem__) if progress else None
