"""onward: copies of big files that survive interruption.

An interruption costs only the bytes in flight: re-run the same copy and it
continues from the last durable checkpoint, never stitches two versions of a
source together, and never leaves a torn file under the destination's name.
"""

# ruff: noqa: F403, F405 (the errors and the events are imported whole, for type checkers only)

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._version import __version__

if _TYPE_CHECKING:  # what type checkers see; __all__ below says which names onward exports
    from .errors import *
    from .events import *
    from .jobs.api import copy
    from .jobs.status import Unfinished, find_unfinished, remove_unfinished
    from .jobs.tree import copy_tree
    from .options import Options

# The module each public name lives in. Imported on first use, so that the command line
# (``onward --version``, a tree copy with nothing to do) does not pay for the copy engine,
# hashlib or the HTTP client it does not need.
_HOME = {
    name: module
    for module, names in {
        "jobs.api": "copy",
        "jobs.tree": "copy_tree",
        "options": "Options",
        "jobs.status": "Unfinished find_unfinished remove_unfinished",
        "errors": "DestinationError DurabilityError IntegrityError Interrupted JournalError NoSpaceError "
        "OnwardError PartialCopyError SourceError TransientError UsageError",
        "events": "Checkpoint CopyResult Done Event FileDone FileFailed Notice Progress Retry Start "
        "Subscriber TreeDone TreeProgress TreeResult TreeStart",
    }.items()
    for name in names.split()
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Checkpoint",
    "CopyResult",
    "DestinationError",
    "Done",
    "DurabilityError",
    "Event",
    "FileDone",
    "FileFailed",
    "IntegrityError",
    "Interrupted",
    "JournalError",
    "NoSpaceError",
    "Notice",
    "OnwardError",
    "Options",
    "PartialCopyError",
    "Progress",
    "Retry",
    "SourceError",
    "Start",
    "Subscriber",
    "TransientError",
    "TreeDone",
    "TreeProgress",
    "TreeResult",
    "TreeStart",
    "Unfinished",
    "UsageError",
    "__version__",
    "copy",
    "copy_tree",
    "find_unfinished",
    "remove_unfinished",
]
