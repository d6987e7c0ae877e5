"""Runs an entry point so that mistakes a user can fix end in one clear sentence, not a traceback."""

from __future__ import annotations

import errno
import logging
import sys
import warnings
from collections.abc import Callable
from typing import TypeVar

from sepdense import stopping  # noqa: F401  (its import marks the command's start, for time_limit)
from sepdense.errors import DiskFullError, UserError

T = TypeVar("T")


def find_user_error(error: BaseException | None) -> UserError | None:
    """The UserError behind ``error``, looking through wrappers (Hydra's InstantiationException, Lightning's).

    A full disk is the user's to fix wherever the write failed (a checkpoint, an event file, metrics.json).
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return DiskFullError.for_path(error.filename)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def run_reporting_user_errors(fn: Callable[..., T], *args: object) -> T:
    """Call ``fn``; on a UserError print ``error: <message>`` to stderr and exit with status 1."""
    try:
        return fn(*args)
    except BaseException as error:  # BaseException: Lightning stops on a signal with SystemExit subclasses
        user_error = find_user_error(error)
        if user_error is None:
            raise
        print(f"error: {user_error}", file=sys.stderr)
        raise SystemExit(getattr(user_error, "exit_code", 1)) from None


# Lightning's messages that are not the user's business: advertising and an internal step.
NOISE = ("💡 Tip", "Loading `train_dataloader` to estimate")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE)


def quiet_libraries() -> None:
    """Keep the libraries' real warnings, drop their advertising, and send Lightning's messages to the run's log.

    Lightning installs its own console handler on import (before Hydra configures logging), so its
    messages never reach train.log; routed through the root logger they reach Hydra's handlers
    (the console and the run's log file).
    """
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logger = logging.getLogger(name)
        if logging.getLogger().handlers:
            logger.handlers.clear()
            logger.propagate = True
        logging.getLogger(f"{name}.utilities.rank_zero").addFilter(_DropNoise())
    # The data module restores the training loader's place in a mid-epoch checkpoint itself (CIFAR10DataModule.
    # state_dict), so Lightning's warning that the loader cannot resume mid-epoch does not apply.
    warnings.filterwarnings("ignore", message=r".*ended before the epoch ended and your dataloader is not resumable")
    # Lightning warns when an epoch has fewer batches than trainer.log_every_n_steps, as if the step loss were
    # then never logged; but the interval counts steps across epochs (Lightning's and module.py's), and the
    # epoch's metrics are logged on its last batch anyway, so a short epoch loses nothing.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # Lightning 2.6 on torch ≥ 2.10 uses a deprecated pytree check; harmless, and nothing a user can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
