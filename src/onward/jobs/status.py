"""Finding unfinished transfers on disk (``onward status``) and removing them (``onward clean``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import NamedTuple

from ..core.identity import one_response
from ..core.journal import DecodeError, decode
from ..core.plan import without
from ..core.upload import is_upload_url
from ..endpoints.local import JOURNAL_SUFFIX, PARTIAL_SUFFIX
from ..errors import DestinationError, SourceError, from_oserror

__all__ = ["Unfinished", "find_unfinished", "remove_unfinished"]


class Unfinished(NamedTuple):
    """An unfinished copy: a journal, a partial, or both, beside ``destination``."""

    destination: str
    source: str | None  # None when there is no readable journal
    size: int | None
    done: int  # bytes committed in the journal
    last_activity: float  # Unix time of the latest change to the journal or partial
    journal: str | None
    partial: str | None
    problem: str | None = None
    tree: bool = False  # a directory-tree copy (onward copy -r), shown as one entry
    files: int | None = None  # a tree's regular files
    files_done: int | None = None
    upload_id: str | None = None  # an S3 multipart upload the store keeps (and bills) until aborted
    restarts: bool = False  # a download its server cannot resume: a re-run starts over

    @property
    def percent(self) -> float | None:
        """Bytes done of the size; never 100 while files remain (a failed empty file, say): an
        unfinished copy is not shown as finished."""
        if self.size is None or self.restarts:  # nothing of it will be kept: no share is "done"
            return None
        percent = 100.0 if self.size == 0 else 100.0 * self.done / self.size
        if self.files is not None and self.files_done is not None and self.files_done < self.files:
            percent = min(percent, 99.9)
        return percent


def _candidates(root: str) -> Iterator[str]:
    """Destinations that have a journal or a partial under ``root``."""
    if not os.path.isdir(root):
        base = root.removesuffix(JOURNAL_SUFFIX).removesuffix(PARTIAL_SUFFIX)
        if any(os.path.lexists(base + s) for s in (JOURNAL_SUFFIX, PARTIAL_SUFFIX)):
            yield base
        return
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        seen = set()
        for name in sorted(files):
            for suffix in (JOURNAL_SUFFIX, PARTIAL_SUFFIX):
                if name.endswith(suffix) and name != suffix:
                    seen.add(name.removesuffix(suffix))
        for base in sorted(seen):
            yield os.path.join(directory, base)


def _describe(destination: str) -> Unfinished:
    journal, partial = destination + JOURNAL_SUFFIX, destination + PARTIAL_SUFFIX
    has_journal, has_partial = os.path.isfile(journal), os.path.isfile(partial)
    present = [p for p, there in ((journal, has_journal), (partial, has_partial)) if there]
    found = Unfinished(
        destination=destination,
        source=None,
        size=None,
        done=0,
        last_activity=max((os.stat(p).st_mtime for p in present), default=0.0),
        journal=journal if has_journal else None,
        partial=partial if has_partial else None,
    )
    if not has_journal:
        return found._replace(problem="partial without a journal")
    try:
        with open(journal, "rb") as fh:
            raw = fh.read()
        loaded = decode(raw)
    except (OSError, DecodeError) as exc:
        return found._replace(problem=f"journal unreadable: {exc}")
    header = loaded.header
    if header.destination[:5] == "s3://":  # an S3 upload's journal (docs/S3.md): no partial either
        from ..core.s3 import read_s3_records

        binding, _ = read_s3_records(raw)
        done = header.plan.committed_bytes(loaded.chunks)
        return found._replace(
            destination=header.destination,
            source=header.source,
            size=header.total_size,
            done=done,
            upload_id=binding.upload_id if binding is not None else None,
        )
    if is_upload_url(header.destination):  # an upload's journal, in the state directory: no partial
        done = header.plan.committed_bytes(loaded.chunks)
        found = found._replace(destination=header.destination)
        return found._replace(source=header.source, size=header.total_size, done=done)
    done = 0
    if has_partial:
        plan, chunks = header.plan, loaded.chunks
        cut = plan.beyond(chunks, os.stat(partial).st_size)  # a partial cut short behind our back
        done = plan.committed_bytes(without(chunks, cut))
    # A download whose server gave no length: the header holds the size reached, not the total.
    size = None if header.identity.attrs.get("length") == "unknown" else header.total_size
    restarts = one_response(header.identity)
    return found._replace(source=header.source, size=size, done=done, restarts=restarts)


def find_uploads() -> list[Unfinished]:
    """Every unfinished upload (``onward copy FILE tus+https://...``): their journals live in
    the user's state directory (``$XDG_STATE_HOME/onward/uploads``), not beside a file."""
    from ..core.upload import state_dir

    directory = state_dir(os.environ, os.path.expanduser("~"))
    if not os.path.isdir(directory):
        return []
    return [_describe(d) for d in _candidates(directory)]


def find_unfinished(root: str = ".") -> list[Unfinished]:
    """Every unfinished copy at or below ``root`` (a directory, a destination or its journal)."""
    if not os.path.lexists(root):
        raise SourceError(f"{root}: no such file or directory", root)
    from .treestatus import inside, unfinished_trees

    trees = unfinished_trees(root)
    roots = [t.destination for t in trees]
    return trees + [_describe(d) for d in _candidates(root) if not inside(os.path.abspath(d), roots)]


def remove_unfinished(item: Unfinished) -> None:
    """Delete the partial and journal of ``item``; refuses while a copy is running on it.

    The partial's lock is held while deleting, so a copy cannot start on it halfway.
    """
    if item.tree:
        from .treestatus import remove_tree

        remove_tree(item)
        return
    if item.destination[:5] == "s3://" and item.journal is not None:
        from .s3copy import abort_unfinished  # botocore only for S3 uploads

        abort_unfinished(item.journal)  # first: the journal is how onward finds the upload
    fd = -1
    # An upload (journal in the state directory) is locked through a lock file beside its journal.
    upload = item.journal is not None and (is_upload_url(item.destination) or item.destination[:5] == "s3://")
    lock = item.journal.removesuffix(JOURNAL_SUFFIX) + ".onward-lock" if item.journal and upload else None
    tmp = (item.journal or "") + ".tmp" if upload else item.destination + JOURNAL_SUFFIX + ".tmp"
    try:
        if item.partial is not None or lock is not None:
            try:
                fd = os.open(lock or item.partial or "", os.O_RDONLY | os.O_CLOEXEC)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except FileNotFoundError:
                pass
            except BlockingIOError:
                raise DestinationError(
                    f"{item.destination}: a copy is running on it right now; not removed", item.destination
                ) from None
        for path in (item.partial, item.journal, tmp, lock):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    except OSError as exc:
        raise from_oserror(exc, exc.filename or item.destination, "cannot remove", source=False) from None
    finally:
        if fd >= 0:
            os.close(fd)
