"""Lightning's checkpoint writer made whole-or-nothing, and its reader made safe (``sepdense.checkpoints``)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from sepdense.checkpoints import load_checkpoint
from sepdense.errors import DiskFullError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a temporary file, flushes it to disk, then renames it over the old checkpoint.

    Lightning writes ``last.ckpt`` in place, so a crash, a preemption or a full disk during the
    write leaves a truncated file where the last good checkpoint was. Here the previous file stays
    intact until the new one is complete (the rename is atomic on POSIX file systems), and a failed
    write removes its temporary file. Loading goes through ``load_checkpoint``: tensors and plain
    values only, whoever calls Lightning's restore.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno == errno.ENOSPC:
                raise DiskFullError.for_path(path) from err
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path)
