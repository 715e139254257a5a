"""The one exception tree of onward.

Every failure a caller can see is an ``OnwardError``; each carries a one-line
``message`` that names the path and the cause and says what to do, and an
``exit_code`` the CLI returns. Endpoints turn ``OSError`` into these at their
boundary (see ``from_oserror``); the engine adds nothing but context; the CLI
prints ``message`` and exits with ``exit_code``. No other exception type is
meant to escape the public API::

    OnwardError                      exit 1 unless noted
    ├── UsageError                   exit 2: bad arguments or options
    ├── SourceError                  missing, unreadable, not a regular file, a directory;
    │                                an HTTP 4xx answer, a TLS or DNS failure
    ├── DestinationError             missing directory, same file as source, busy, no permission
    ├── JournalError                 garbled, foreign or newer-format journal
    ├── NoSpaceError                 ENOSPC / EDQUOT; says how much more space is needed
    ├── DurabilityError              fsync failed: nothing since the last checkpoint is trusted
    ├── TransientError               worth retrying: EIO, EAGAIN, a dropped connection, HTTP 5xx, ...
    ├── IntegrityError               source kept changing, a chunk kept failing verification,
    │                                or the copy does not match --expect-digest or the server's digest
    ├── PartialCopyError             exit 23 (as rsync): a tree copy where some entries failed; the
    │                                rest is copied, ``failures`` lists them, a re-run retries them
    └── Interrupted                  exit 130: Ctrl-C or SIGTERM; progress is kept, re-run resumes
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "DestinationError",
    "DurabilityError",
    "IntegrityError",
    "Interrupted",
    "JournalError",
    "NoSpaceError",
    "OnwardError",
    "PartialCopyError",
    "SourceError",
    "TransientError",
    "UsageError",
]  # what onward re-exports; from_oserror is for its endpoints

# The exit codes of the command line, here only (``onward --help`` and docs/CLI.md list them).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 23
EXIT_INTERRUPTED = 130


class OnwardError(Exception):
    """Base of every error onward reports; ``str(err)`` is the one-line message."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class UsageError(OnwardError):
    exit_code = EXIT_USAGE


class SourceError(OnwardError):
    pass


class DestinationError(OnwardError):
    pass


class JournalError(OnwardError):
    pass


class NoSpaceError(OnwardError):
    pass


class DurabilityError(OnwardError):
    pass


class TransientError(OnwardError):
    """Worth another attempt; ``retry_after`` is how long the other side asked to wait (seconds).
    ``reason`` is what happened, for a retry line; ``message`` ends with the advice to re-run,
    for when the retries are spent."""

    ADVICE = "; re-run to resume"

    def __init__(self, message: str, path: str | None = None, retry_after: float | None = None) -> None:
        self.reason = message.removesuffix(self.ADVICE)
        super().__init__(self.reason + self.ADVICE, path)
        self.retry_after = retry_after


class IntegrityError(OnwardError):
    pass


class PartialCopyError(OnwardError):
    """Some entries of a tree could not be copied; everything else was. ``failures`` holds
    (path, message) for each, in the order met."""

    exit_code = EXIT_PARTIAL

    def __init__(self, message: str, path: str | None, failures: tuple[tuple[str, str], ...]) -> None:
        super().__init__(message, path)
        self.failures = failures


class Interrupted(OnwardError):
    """The run was stopped on request; ``done`` of ``total`` bytes are durable."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, path: str | None, done: int, total: int) -> None:
        super().__init__(message, path)
        self.done = done
        self.total = total


# errno values worth another attempt from the last checkpoint; anything else is final.
TRANSIENT_ERRNOS = frozenset(
    {errno.EIO, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY, errno.ESTALE}
)


def from_oserror(exc: OSError, path: str, doing: str, *, source: bool) -> OnwardError:
    """Map an ``OSError`` met while ``doing`` something to ``path`` into the tree.

    ``source`` says which side of the copy ``path`` belongs to, so permission
    and missing-file errors land on ``SourceError`` or ``DestinationError``.
    """
    code = exc.errno or 0
    cause = os.strerror(code) if code else str(exc)
    where = f"{path}: {doing}: {cause}"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceError(where, path)  # the engine adds how much more is needed
    if code in TRANSIENT_ERRNOS:
        return TransientError(f"{where}; re-run to resume", path)
    side: type[OnwardError] = SourceError if source else DestinationError
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return side(f"{where}; fix the permissions and re-run", path)
    if code == errno.EFBIG:  # RLIMIT_FSIZE (Python ignores SIGXFSZ) or the file system's maximum
        hint = "raise the file size limit (ulimit -f) or use another file system, and re-run"
        return side(f"{where}; {hint}", path)
    return side(where, path)
