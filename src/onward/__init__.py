"""onward: copies of big files that survive interruption.

An interruption costs only the bytes in flight: re-run the same copy and it
continues from the last durable checkpoint, never stitches two versions of a
source together, and never leaves a torn file under the destination's name.
"""

from ._version import __version__
from .api import copy
from .errors import (
    DestinationError,
    DurabilityError,
    IntegrityError,
    Interrupted,
    JournalError,
    NoSpaceError,
    OnwardError,
    SourceError,
    TransientError,
    UsageError,
)
from .events import Checkpoint, CopyResult, Done, Event, Notice, Progress, Retry, Start, Subscriber
from .options import Options
from .status import Unfinished, find_unfinished, remove_unfinished

__all__ = [
    "Checkpoint",
    "CopyResult",
    "DestinationError",
    "Done",
    "DurabilityError",
    "Event",
    "IntegrityError",
    "Interrupted",
    "JournalError",
    "NoSpaceError",
    "Notice",
    "OnwardError",
    "Options",
    "Progress",
    "Retry",
    "SourceError",
    "Start",
    "Subscriber",
    "TransientError",
    "Unfinished",
    "UsageError",
    "__version__",
    "copy",
    "find_unfinished",
    "remove_unfinished",
]
