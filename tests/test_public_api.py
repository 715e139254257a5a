"""The public surface is exactly what ``__all__`` says, and the library call works as documented."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import onward
from onward.events import Event, Progress, Subscriber

EXPECTED = {
    "Checkpoint", "CopyResult", "DestinationError", "Done", "DurabilityError", "Event",
    "IntegrityError", "Interrupted", "JournalError", "NoSpaceError", "Notice", "OnwardError",
    "Options", "Progress", "Retry", "SourceError", "Start", "Subscriber", "TransientError",
    "Unfinished", "UsageError", "__version__", "copy", "find_unfinished", "remove_unfinished",
    "copy_tree", "TreeResult", "PartialCopyError", "TreeStart", "FileDone", "FileFailed",
    "TreeProgress", "TreeDone",
}  # fmt: skip


def test_all_is_exactly_the_public_surface() -> None:
    assert set(onward.__all__) == EXPECTED
    for name in onward.__all__:
        assert hasattr(onward, name), name
    public = {n for n in vars(onward) if not n.startswith("_")} - {
        "cli", "core", "endpoints", "engine", "errors", "events", "jobs", "options", "readahead",
        "units", "checksum", "server",
    }  # fmt: skip
    assert public <= EXPECTED


def test_every_error_is_an_onward_error() -> None:
    for name in onward.__all__:
        obj = getattr(onward, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, onward.OnwardError)


def test_copy_returns_a_result_and_reports_through_subscribers(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)

    class Counter(Subscriber):
        def __init__(self) -> None:
            self.progress = 0

        def on_progress(self, event: Progress) -> None:
            self.progress += 1

    counter, seen = Counter(), []

    def everything(event: Event) -> None:
        seen.append(event.kind)

    result = onward.copy(src, dst, chunk_size=65536, listeners=[counter, everything])
    assert dst.read_bytes() == data
    assert (result.size, result.copied, result.resumed_from) == (len(data), len(data), 0)
    assert len(result.digest) == 32 and result.duration >= 0
    assert counter.progress == 5 and seen[0] == "start" and seen[-1] == "done"


def test_copy_into_a_directory_keeps_the_name(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello")
    (tmp_path / "out").mkdir()
    result = onward.copy(str(tmp_path / "a.txt"), str(tmp_path / "out"))
    assert result.destination == str(tmp_path / "out" / "a.txt")
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"hello"


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(onward.UsageError, match="unknown option"):
        onward.copy(tmp_path / "a", tmp_path / "b", colour="blue")
    with pytest.raises(onward.UsageError, match="chunk size"):
        onward.copy(tmp_path / "a", tmp_path / "b", chunk_size=1)
    assert not (tmp_path / "b").exists()


def test_find_and_remove_unfinished(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(200_000))

    def stop(event: Event) -> None:
        if isinstance(event, onward.Checkpoint) and event.committed >= 65536:
            raise KeyboardInterrupt

    with pytest.raises(onward.Interrupted):
        onward.copy(src, tmp_path / "dst.bin", chunk_size=65536, checkpoint_bytes=65536, listeners=[stop])
    [item] = onward.find_unfinished(str(tmp_path))
    assert item.source == str(src) and item.size == 200_000 and item.done >= 65536
    onward.remove_unfinished(item)
    assert onward.find_unfinished(str(tmp_path)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.bin"]


def test_copy_to_an_upload_url_that_is_malformed_is_a_usage_error(tmp_path: Path) -> None:
    """``onward.copy(FILE, "tus+https://...")`` is an upload (docs/UPLOAD.md); bad URLs say why."""
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(onward.UsageError, match="no host name"):
        onward.copy(tmp_path / "a", "tus+https://")
    with pytest.raises(onward.UsageError, match="tus\\+http"):
        onward.copy(tmp_path / "a", "https://example.invalid/files/")
