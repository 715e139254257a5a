"""``onward.copy(FILE, "s3://bucket/key")`` and ``onward.copy("s3://bucket/key", DST)``.

Wires the S3 endpoints (``onward.endpoints.s3*``) to the engine. An upload's journal
lives in the state directory, keyed by the file, the object and the store; before the
engine runs, ``continue_earlier`` reconciles it with the store: the upload the journal
names (or, when a kill came between creating it and journaling it, the newest upload
for the key begun since the journal was made), ListParts, each listed part compared
with the journal's record of it (size, ETag, checksum) or, when the journal lacks it,
with the file; only parts that match are kept. A changed file aborts the old upload and
starts a new one. A download's partial and journal sit beside the destination, as for
any download. docs/S3.md has the rules.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import NamedTuple

import xxhash

from ..checksum import check_digests
from ..core import s3 as proto
from ..core.http import parse_checksum
from ..core.identity import matches
from ..core.journal import Decoded, DecodeError, decode, encode_chunks, encode_start
from ..core.plan import ChunkRecord
from ..core.upload import state_dir, state_key
from ..endpoints.local import LocalSink, LocalSource
from ..endpoints.localjournal import LocalJournal
from ..endpoints.s3 import Settings, Store, connect
from ..endpoints.s3source import S3Source
from ..endpoints.s3upload import S3Journal, S3UploadSink
from ..engine import Transfer
from ..errors import DestinationError, IntegrityError, UsageError
from ..events import CopyResult, Event, Listener, Notice, dispatch
from ..options import Options

__all__ = ["download", "upload"]

MiB = 1 << 20
# A resume loses only the parts in flight (unjournaled parts are found by ListParts and compared
# with the file), so checkpoints, which wait for every part in flight, can be rare.
CHECKPOINT_BYTES = 256 * MiB
CHECKPOINT_SECONDS = 10.0
ORPHAN_SLACK = 600.0  # seconds of clock difference allowed when adopting an unjournaled upload


class TreeFile(NamedTuple):
    """What a tree hands each file's copy: its client, and where the object's ETag goes once the
    copy is done (the tree journal records it)."""

    store: Store
    finished: Callable[[str], None]


def settings(opts: Options) -> Settings:
    return Settings(
        opts.profile, opts.endpoint_url, opts.region, opts.timeout, opts.retries, opts.connections
    )


def target_of(text: str) -> proto.S3Url:
    try:
        return proto.parse_s3_url(text)
    except ValueError as exc:
        raise UsageError(f"{text}: {exc}") from None


def min_part_size() -> int:
    """S3's 5 MiB, or less for a store configured with a smaller minimum (ONWARD_S3_MIN_PART_SIZE:
    radosgw's rgw_multipart_min_part_size, moto's S3_UPLOAD_PART_MIN_SIZE in the tests)."""
    raw = os.environ.get("ONWARD_S3_MIN_PART_SIZE", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else proto.MIN_PART


def upload(
    src: str, dst: str, opts: Options, listeners: Sequence[Listener] = (), tree: TreeFile | None = None
) -> CopyResult:
    """Upload the file ``src`` to ``dst`` (``s3://bucket/key``, or a prefix it goes under); ``tree``:
    the client to reuse and where to report the ETag of the object this run put or completed."""
    if opts.checksum is not None:
        raise UsageError(f"{dst}: --checksum checks a copy read back; an upload's parts carry checksums")
    source = LocalSource.open(src)
    try:
        sink = upload_sink(source, target_of(dst), opts, tree.store if tree else None)
    except BaseException:
        source.close()
        raise

    def emit(event: Event) -> None:
        for listener in listeners:
            dispatch(listener, event)

    sink.on_notice = lambda message: emit(Notice(sink.name, message))
    run_opts = opts._replace(
        chunk_size=sink.part_size,
        checkpoint_bytes=opts.checkpoint_bytes or CHECKPOINT_BYTES,
        checkpoint_seconds=max(opts.checkpoint_seconds, CHECKPOINT_SECONDS),
        connections=1,  # the file is read by one thread; the sink sends parts in parallel
        restart=False,
    )
    if sink.single:  # one PutObject: no journal a later run could resume (it sends the file again)
        from ..endpoints.batch import MemoryJournal

        journal: S3Journal | MemoryJournal = MemoryJournal(sink.name)
    else:
        journal = resumable_journal(source, sink, opts)
    result = Transfer(source, sink, journal, run_opts, listeners).run()
    if tree is not None and sink.etag:
        tree.finished(sink.etag)
    return result


def resumable_journal(source: LocalSource, sink: S3UploadSink, opts: Options) -> S3Journal:
    """The upload's journal in the state directory, locked, reconciled with the store."""
    try:
        journal = S3Journal.lock(
            state_dir(os.environ, os.path.expanduser("~")), journal_key(source, sink), sink
        )
    except BaseException:
        source.close()
        raise
    try:
        if opts.restart:
            forget(journal, sink)
        else:
            continue_earlier(journal, sink, source)
    except BaseException:
        source.close()
        sink.close()
        journal.close()
        raise
    return journal


def upload_sink(source: LocalSource, target: proto.S3Url, opts: Options, store: Store | None) -> S3UploadSink:
    """The sink for ``source``'s upload to ``target`` (a key, or a prefix it goes under), its part
    size chosen for the file's size."""
    target = proto.object_key(target, os.path.basename(source.name))
    size = source.identity().size
    try:
        part_size = proto.choose_part_size(size, opts.part_size, min_part_size())
    except ValueError as exc:
        raise UsageError(f"{target.name}: {exc}") from None
    return S3UploadSink(
        store or connect(settings(opts), target.name),
        target,
        read_source=source.read_into,
        part_size=part_size,
        checksum=opts.checksum_algorithm,
        connections=opts.connections,
        single=size <= part_size,
    )


def journal_key(source: LocalSource, sink: S3UploadSink) -> str:
    return "s3-" + state_key(source.name, f"{sink.name}\n{sink.endpoint}").removeprefix("upload-")


def forget(journal: S3Journal, sink: S3UploadSink) -> None:
    """--restart: abort the upload the journal names, drop the journal."""
    raw = journal.read()
    if raw is not None:
        binding, _ = proto.read_s3_records(raw)
        if binding is not None:
            sink.abort(binding)
    journal.remove()


def continue_earlier(journal: S3Journal, sink: S3UploadSink, source: LocalSource) -> None:
    """Hand the sink the upload an earlier run made for this very file, with the parts the store
    holds as they were sent; rewrite the journal to claim exactly those parts."""
    raw = journal.read()
    if raw is None:
        return
    try:
        loaded = decode(raw)
    except DecodeError:
        return  # the engine reports the journal itself
    binding, remembered = proto.read_s3_records(raw)
    current = source.identity()
    header = loaded.header
    if not matches(header.identity, current):
        if binding is not None:
            notice(
                sink,
                f"{source.name} changed since its upload began: aborting multipart upload "
                f"{binding.upload_id} and starting a new one",
            )
            sink.abort(binding)
        journal.remove()
        return
    sink.part_size = header.chunk_size  # the journal's part size, not this run's --part-size
    if binding is None:
        binding = find_orphan(sink, loaded)
        if binding is None:
            return
        remembered = {}
    sink.single = False
    if loaded.promote is not None:
        sink.adopt(binding, remembered)
        if sink.completed():
            return  # the engine sees the PROMOTE record and finishes
    listed = sink.list_parts(binding)
    if listed is None:
        sink.adopt(binding, remembered)
        if sink.completed():
            return
        notice(
            sink,
            f"the store no longer has multipart upload {binding.upload_id} (it expired or was "
            "aborted): starting a new one",
        )
        sink.binding, sink.parts = None, {}
        journal.remove()
        return
    kept, chunks = verify_parts(sink, source, loaded, listed, remembered)
    dropped = sorted((set(remembered) | set(listed)) - set(kept))
    if dropped:
        notice(
            sink,
            f"{len(dropped)} part(s) the store lists or the journal remembers do not match the "
            "file: sending them again",
        )
    sink.adopt(binding, kept)
    journal.create(encode_start(header) + encode_chunks(chunks))


def verify_parts(
    sink: S3UploadSink,
    source: LocalSource,
    loaded: Decoded,
    listed: dict[int, proto.Part],
    remembered: dict[int, proto.Part],
) -> tuple[dict[int, proto.Part], list[ChunkRecord]]:
    """The listed parts that are the file's own, and the CHUNK records that claim them. A part the
    journal remembers must match its record; one it does not is read from the file and compared
    (its checksum when the store lists one, else its MD5 with a plain ETag)."""
    plan = loaded.header.plan
    kept: dict[int, proto.Part] = {}
    chunks: list[ChunkRecord] = []
    buf = memoryview(bytearray(plan.chunk_size))
    for number, part in sorted(listed.items()):
        index = number - 1
        if index >= plan.chunk_count:
            continue
        offset, length = plan.span(index)
        verdict = proto.part_matches(part, remembered.get(number), length)
        if verdict is False:
            continue
        record = loaded.chunks.get(index)
        if record is None and verdict and remembered[number].digest:  # recorded when acknowledged
            record = ChunkRecord(index, length, bytes.fromhex(str(remembered[number].digest)))
        if verdict is None or record is None:
            view = buf[:length]
            if source.read_into(offset, view) != length:
                continue
            if verdict is None:
                mine = proto.checksum_of(sink.checksum, view)
                md5 = proto.md5_etag(part.etag)
                if part.checksum is not None:
                    if part.checksum != mine:
                        continue
                elif md5 is None or md5 != hashlib.md5(view).hexdigest():
                    continue
                part = part._replace(checksum=mine)
            else:
                part = remembered[number]
            record = ChunkRecord(index, length, xxhash.xxh3_128(view).digest())
        kept[number] = part if verdict is None else remembered[number]
        chunks.append(record)
    return kept, chunks


def find_orphan(sink: S3UploadSink, loaded: Decoded) -> proto.S3Upload | None:
    """The upload an earlier run created but was killed before journaling: the newest upload for the
    key that holds no part or was begun since the journal was made (``find_uploads``); its parts are
    compared with the file before any is kept, so adopting one never puts foreign bytes in the object."""
    header = loaded.header
    found = sink.find_uploads(header.created - ORPHAN_SLACK)
    if not found:
        return None
    notice(sink, f"found multipart upload {found[0]} that an interrupted run had not yet journaled")
    binding = proto.S3Upload(
        sink.target.bucket,
        sink.target.key,
        sink.endpoint,
        found[0],
        header.chunk_size,
        sink.checksum,
        header.identity,
        header.total_size,
        time.time(),
    )
    return binding


def abort_unfinished(journal: str) -> None:
    """``onward clean``: abort the multipart upload an S3 journal names (the store bills its parts
    until then), with the credentials the environment gives, at the endpoint the journal records."""
    with open(journal, "rb") as fh:
        binding, _ = proto.read_s3_records(fh.read())
    if binding is None:
        return
    target = proto.S3Url(binding.bucket, binding.key)
    aws = urllib.parse.urlsplit(binding.endpoint).hostname or ""
    given = None if aws.endswith(".amazonaws.com") else binding.endpoint  # AWS: as the region says
    store = connect(Settings(endpoint_url=given), target.name)
    sink = S3UploadSink(store, target, read_source=lambda offset, buf: 0, part_size=1, checksum="crc32c")
    sink.abort(binding)


def notice(sink: S3UploadSink, message: str) -> None:
    if sink.on_notice is not None:
        sink.on_notice(message)


# -- downloads ----------------------------------------------------------------------------------


def download(
    src: str, dst: str, opts: Options, listeners: Sequence[Listener] = (), tree: TreeFile | None = None
) -> CopyResult:
    """Download ``src`` (``s3://bucket/key``) to the file or existing directory ``dst``; ``tree``:
    the client to reuse and where to report the ETag of the object the file now holds."""
    target = target_of(src)
    if target.is_prefix:
        raise UsageError(f"{target.name}: names a prefix (a 'directory'); use -r to copy what is under it")
    store = tree.store if tree else connect(settings(opts), target.name)
    source = S3Source.open(store, target, connections=opts.connections)
    try:
        path = dst
        if os.path.isdir(dst):
            path = os.path.join(dst, target.key.rsplit("/", 1)[-1])
        elif dst.endswith("/"):
            raise DestinationError(f"{dst}: destination directory does not exist", dst)
        path = os.path.abspath(path)
        if os.path.isdir(path):
            raise DestinationError(f"{path}: is a directory; cannot replace it with a file", path)
        sink = LocalSink.open(path)
    except BaseException:
        source.close()
        raise
    stored = source.stored_checksum
    given = [parse_checksum(opts.checksum)] if opts.checksum else []

    def check(read: Callable[[int, memoryview], int], size: int) -> None:
        check_digests(read, size, given, path)  # --checksum ALG:HEX
        if stored is not None:
            check_stored(read, size, stored, source.name)

    result = Transfer(source, sink, LocalJournal(path), opts, listeners, final_check=check).run()
    if tree is not None:
        tree.finished(source.etag)
    return result


def check_stored(
    read: Callable[[int, memoryview], int], size: int, stored: tuple[str, str], name: str
) -> None:
    """Compare the finished partial with the object's stored whole-object checksum."""
    algorithm, want = stored
    buf = memoryview(bytearray(MiB))
    offset, running = 0, proto.Running(algorithm)
    while offset < size:
        view = buf[: min(MiB, size - offset)]
        got = read(offset, view)
        if got <= 0:
            break
        running.update(view[:got])
        offset += got
    have = running.value()
    if have != want:
        raise IntegrityError(
            f"{name}: the copy's {algorithm} is {have}, but the store's stored checksum is {want}; "
            "nothing was promoted (re-run with --restart to fetch it again)",
            name,
        )
