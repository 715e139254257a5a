"""``onward copy -r DIR s3://bucket/prefix/`` and ``onward copy -r s3://bucket/prefix/ DIR``.

Each file is one resumable S3 copy (``onward.s3copy``: an upload's journal in the state
directory, a download's partial and journal beside it), so the file that was in flight when a
run stopped continues from its last part or chunk. A file whose copy is already there, with
the same size and the same content (the stored whole-object checksum, else the plain MD5
ETag, else the multipart ETag its parts make, their size asked of the store), is skipped
after reading it locally: a finished tree re-run sends nothing. Where the tree lands follows
rsync's trailing-slash rule (``DIR`` makes ``prefix/DIR/...``, ``DIR/`` fills ``prefix/``). A
file that fails does not stop the tree; the run ends with ``PartialCopyError`` (exit 23)
naming each. docs/S3.md.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from . import s3copy
from .core import s3 as proto
from .endpoints.s3 import Store, connect, head, list_objects
from .errors import DestinationError, Interrupted, OnwardError, PartialCopyError, UsageError
from .events import Listener
from .options import Options

__all__ = ["copy_tree"]

BLOCK = 1 << 20


def copy_tree(
    src: str, dst: str, opts: Options, listeners: Callable[[], Sequence[Listener]]
) -> tuple[int, int]:
    """Copy the tree; (files copied, files skipped as already there). ``listeners()`` gives each
    file's listeners."""
    upload = proto.is_s3_url(dst)
    remote = s3copy.target_of(dst if upload else src)
    store = connect(s3copy.settings(opts), remote.name)
    if upload:
        if not os.path.isdir(src):
            raise UsageError(f"{src}: -r copies a directory; give a directory")
        pairs = list(local_files(src, remote))
    else:
        pairs = list(remote_files(store, remote, src, dst))
    failures: list[tuple[str, str]] = []
    copied = skipped = 0
    for local, target, size in pairs:
        try:
            if same(store, target, local, size):
                skipped += 1
                continue
            if upload:
                s3copy.upload(local, target.name, opts, listeners(), store)
            else:
                if os.path.isdir(local):
                    raise DestinationError(f"{local}: is a directory; cannot replace it with a file", local)
                os.makedirs(os.path.dirname(local), exist_ok=True)
                s3copy.download(target.name, local, opts, listeners(), store)
            copied += 1
        except Interrupted:
            raise
        except (OnwardError, OSError) as exc:
            failures.append((local if upload else target.name, str(exc)))
    if failures:
        raise PartialCopyError(
            f"{src}: {len(failures)} of {len(pairs)} files could not be copied (the rest were); "
            "re-run to retry them: " + "; ".join(message for _, message in failures[:3]),
            src,
            tuple(failures),
        )
    return copied, skipped


def local_files(src: str, prefix: proto.S3Url) -> Any:
    """(path, object, size) of every regular file under ``src``, by rsync's trailing-slash rule."""
    base = "" if src.endswith("/") else os.path.basename(os.path.abspath(src)) + "/"
    root = prefix.key if prefix.is_prefix else prefix.key + "/"
    for directory, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue  # symlinks and special files are not objects
            rel = os.path.relpath(path, src).replace(os.sep, "/")
            yield path, prefix._replace(key=root + base + rel), os.path.getsize(path)


def remote_files(store: Store, prefix: proto.S3Url, src: str, dst: str) -> Any:
    """(path, object, size) of every object under the prefix, refusing keys that would leave ``dst``."""
    root = prefix.key if prefix.is_prefix else prefix.key + "/"
    base = "" if src.endswith("/") else root.rstrip("/").rsplit("/", 1)[-1]
    top = os.path.abspath(os.path.join(dst, base))
    for key, size in list_objects(store, prefix.bucket, root, prefix.name):
        rel = key[len(root) :]
        if not rel or rel.endswith("/"):
            continue  # a "directory" marker object
        path = os.path.abspath(os.path.join(top, rel))
        if not path.startswith(top + os.sep) or any(p in ("", ".", "..") for p in rel.split("/")):
            raise DestinationError(f"s3://{prefix.bucket}/{key}: the key is not a safe file name under {dst}")
        yield path, prefix._replace(key=key), size


def same(store: Store, target: proto.S3Url, local: str, size: int) -> bool:
    """Whether the object and the local file hold the same bytes: same size, and the object's
    stored whole-object checksum, plain MD5 ETag or multipart ETag equal to the file's."""
    if not os.path.isfile(local) or os.path.getsize(local) != size:
        return False
    answer = head(store, target)
    if answer is None or answer.get("ContentLength") != size:
        return False
    etag = str(answer.get("ETag", ""))
    for algorithm, (suffix, _) in proto.CHECKSUMS.items():
        value = answer.get("Checksum" + suffix)
        if value and "-" not in etag and "-" not in str(value):
            return bool(digest_file(local, proto.Running(algorithm)) == value)
    if proto.md5_etag(etag) is not None:
        return digest_file(local, None) == proto.md5_etag(etag)
    count = etag.strip('"').rpartition("-")[2]
    if count.isdigit():
        first = head(store, target, part=1)  # the first part's size is the part size
        part = int(first.get("ContentLength", 0)) if first is not None else 0
        if part > 0 and -(-size // part) == int(count):
            return proto.composite_etag(part_md5s(local, part)) == etag
    return False


def digest_file(path: str, running: proto.Running | None) -> str:
    """The file's ``running`` checksum (base64), or its MD5 (hex) when None."""
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            (running or md5).update(block)
    return running.value() if running is not None else md5.hexdigest()


def part_md5s(path: str, part: int) -> list[str]:
    with open(path, "rb") as fh:
        return [f'"{hashlib.md5(block).hexdigest()}"' for block in iter(lambda: fh.read(part), b"")]
