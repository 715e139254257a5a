"""Downloads that no server can fool, through the real CLI against ``Misbehaving``.

Each test names one way a real server misleads a client (a CDN mid-deploy serving two
versions, a hostile or careless Content-Disposition, a probe answered with the whole
file, dropped connections without ranges, redirects to signed URLs that expire, URL
credentials and redirects) and asserts the property onward promises against it: never
a stitched file, never a file clobbered or created outside the destination, memory
bounded by the buffers, the retry budget honoured, ``resumed_from`` true.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from http_servers import Behaviour, Misbehaving
from test_http import (
    ENV,
    ONWARD,
    MiB,
    blob,
    done,
    error_line,
    events,
    finished,
    kill_midway,
    notices,
    of_kind,
    run,
)

KiB = 1 << 10
CHUNKS = ("--chunk-size", "256K")


def copy(url: str, dst: Path, *extra: str) -> tuple[Any, list[dict[str, Any]]]:
    proc = run("copy", "--json", *extra, url, dst, timeout=120)
    return proc, events(proc.stdout) if proc.returncode == 0 else []


# -- 1. validators on every partial response ---------------------------------------------------


@pytest.mark.parametrize("weak", [False, True], ids=["strong-etag", "weak-etag-last-modified"])
@pytest.mark.parametrize("connections", ["1", "4"])
def test_two_versions_served_at_once_are_never_stitched(tmp_path: Path, connections: str, weak: bool) -> None:
    """Every second request reaches the other version and If-Range is ignored (two backends
    mid-deploy): only the validator of each 206 tells the versions apart. A weak ETag never
    vouches for a range; Last-Modified does then."""
    old, new = blob(2 * MiB, "v-old"), blob(2 * MiB, "v-new")
    with Misbehaving(old, Behaviour(other=new, weak=weak)) as server:
        proc, evs = copy(server.url, tmp_path / "f", *CHUNKS, "--connections", connections)
    assert proc.returncode == 0, proc.stderr
    got = (tmp_path / "f").read_bytes()
    assert got in (old, new)  # one version, whole: never a prefix of one and the rest of the other
    field = "Last-Modified" if weak else "ETag"
    assert f"the server answered with another version of the file ({field}" in notices(evs)
    assert "starting over from zero" in notices(evs)
    assert done(evs)["resumed_from"] == 0


def test_a_file_that_never_stops_changing_fails_clearly_after_the_retry_budget(tmp_path: Path) -> None:
    versions = {n: blob(MiB, f"n{n}") for n in range(1, 20)}  # every data request: a new version
    with Misbehaving(blob(MiB, "n0"), Behaviour(replace_at=versions)) as server:
        proc, _ = copy(server.url, tmp_path / "f", "--retries", "2")
        data_requests = server.data_count
    error_line(proc, 1, server.url, "another version of the file", "re-run to resume")
    assert data_requests == 3  # the first attempt and two retries, each started over
    assert not (tmp_path / "f").exists()


def test_partial_answers_without_a_validator_are_never_combined(tmp_path: Path) -> None:
    """The probe's 206 has an ETag, the data 206s none: nothing proves they are one version,
    so onward downloads the file in one piece instead."""
    data = blob(2 * MiB, "bare")
    with Misbehaving(data, Behaviour(bare_partials=True)) as server:
        proc, evs = copy(server.url, tmp_path / "f", *CHUNKS)
    assert proc.returncode == 0, proc.stderr
    assert "(ETag missing, not" in notices(evs) and "downloaded in one piece" in notices(evs)
    assert finished(tmp_path / "f", data)


def test_a_version_change_mid_run_after_a_resume_restarts_and_resumed_from_is_zero(tmp_path: Path) -> None:
    old, new = blob(4 * MiB, "r-old"), blob(4 * MiB, "r-new")
    dst = tmp_path / "f"
    with Misbehaving(old) as server:
        committed, _, _ = kill_midway(server.url, dst)
        server.behaviour.replace_at = {server.data_count + 2: new}  # the resume's second request
        proc, evs = copy(server.url, dst, "--chunk-size", "64K", "--connections", "2")
    assert proc.returncode == 0, proc.stderr
    assert of_kind(evs, "start")[0]["resumed_from"] >= committed > 0
    assert done(evs)["resumed_from"] == 0  # what the restart threw away is not "resumed"
    assert "starting over from zero" in notices(evs)
    assert finished(dst, new)


# -- 2. a server's file name is a suggestion ---------------------------------------------------


def test_content_disposition_never_replaces_an_existing_file(tmp_path: Path) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_bytes(b"my own notes")
    with Misbehaving(blob(MiB, "cd-x"), Behaviour(disposition='attachment; filename="notes.txt"')) as server:
        proc, _ = copy(server.url, tmp_path, "--content-disposition")
        named = tmp_path / "named.txt"
        named.write_bytes(b"old")
        given, _ = copy(server.url, named, "--content-disposition")  # a path the user names: replaced
    error_line(proc, 1, str(mine), "already exists", "Content-Disposition", "give the destination path")
    assert mine.read_bytes() == b"my own notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.txt", "notes.txt"]
    assert given.returncode == 0, given.stderr
    assert finished(named, server.data)


@pytest.mark.parametrize(
    ("disposition", "extra", "expected", "note"),
    [
        ('attachment; filename="../x"', (), "x", "reduced to 'x'"),
        ('attachment; filename=".bashrc"', (), "file.bin", "hidden file"),
        ('attachment; filename=".bashrc"', ("--allow-hidden",), ".bashrc", None),
        ("attachment; filename*=UTF-8''..%2F..%2F.profile", (), "file.bin", "hidden file"),
    ],
    ids=["parent", "dot-file", "dot-file-allowed", "parent-dot-file"],
)
def test_content_disposition_is_a_plain_visible_name_inside_the_directory(
    tmp_path: Path, disposition: str, extra: tuple[str, ...], expected: str, note: str | None
) -> None:
    data = blob(100 * KiB, disposition)
    inside = tmp_path / "a" / "b"
    inside.mkdir(parents=True)
    with Misbehaving(data, Behaviour(disposition=disposition)) as server:
        proc, evs = copy(server.url, inside, "--content-disposition", *extra)
    assert proc.returncode == 0, proc.stderr
    assert finished(inside / expected, data)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "a",
        "a/b",
        f"a/b/{expected}",
    ]
    if note is not None:
        assert note in notices(evs)


# -- 3. memory bounded whatever the server sends -----------------------------------------------


@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="needs GNU time (scripts/test installs it)")
def test_probe_answered_with_the_whole_file_keeps_memory_bounded(tmp_path: Path) -> None:
    """A 256 MiB answer to ``Range: bytes=0-0``: the probe reads at most its one byte and closes.
    Peak RSS is measured as bench/http_bench.py does: GNU time's ``%M`` of the onward process."""
    data = blob(MiB, "huge") * 256
    rss = tmp_path / "rss"
    with Misbehaving(data, Behaviour(probe_whole=True)) as server:
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(rss), *ONWARD, "copy", server.url, str(tmp_path / "f")],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            env=ENV,
        )
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "f", data)
    peak = int(rss.read_text().split()[-1]) * KiB
    assert peak < 64 * MiB, f"peak RSS {peak / MiB:.0f} MiB"


# -- 4. one retry budget ---------------------------------------------------------------------------


def test_drops_beyond_three_without_ranges_use_the_retry_budget(tmp_path: Path) -> None:
    data = blob(MiB, "drops")
    drops = {n: 300 * KiB for n in range(1, 6)}  # five broken responses, then a whole one
    with Misbehaving(data, Behaviour(ranges=False, drop_at=drops)) as server:
        proc, evs = copy(server.url, tmp_path / "f", "--chunk-size", "64K", "--retries", "10")
        server.behaviour.drop_at = {n: 300 * KiB for n in range(server.data_count + 1, 100)}
        failed, _ = copy(server.url, tmp_path / "g", "--chunk-size", "64K", "--retries", "2")
    assert proc.returncode == 0, proc.stderr
    retries = of_kind(evs, "retry")
    assert len(retries) == 5 and all("connection broke" in r["error"] for r in retries)
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4, 5]  # a restart is no progress
    assert "without byte ranges and a validator a download cannot go on: starting over" in notices(evs)
    assert done(evs)["resumed_from"] == 0 and finished(tmp_path / "f", data)
    line = error_line(failed, 1, server.url, "connection broke", "re-run to resume")
    assert "kept changing" not in line


# -- 5. redirects -------------------------------------------------------------------------------------


@pytest.mark.parametrize("connections", ["1", "4"])
def test_url_credentials_follow_an_absolute_redirect_to_the_same_origin(
    tmp_path: Path, connections: str
) -> None:
    data = blob(2 * MiB, "creds")
    with Misbehaving(data, Behaviour(user="alice:s3cret")) as server:
        url = server.url_for("/hop/2/file.bin", userinfo="alice:s3cret")
        proc, _ = copy(url, tmp_path / "f", *CHUNKS, "--connections", connections)
        log = list(server.log)
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "f", data)
    assert "s3cret" not in proc.stdout + proc.stderr
    data_requests = [e for e in log if e["range"] not in (None, "bytes=0-0")]
    assert data_requests and all(e["path"] == "/hop/0/file.bin" for e in data_requests)


def test_url_credentials_never_follow_a_redirect_to_another_origin(tmp_path: Path) -> None:
    data = blob(MiB, "away")
    with Misbehaving(data, Behaviour(user="alice:s3cret")) as there:
        with Misbehaving(b"", Behaviour(away=there.url)) as here:
            proc, _ = copy(here.url_for("/away/file.bin", userinfo="alice:s3cret"), tmp_path / "f")
        log = list(there.log)
    error_line(proc, 1, "401")
    assert log and all(e["auth"] is None for e in log)  # another port is another origin
    assert not (tmp_path / "f").exists()


def test_end_of_run_check_reuses_the_final_url(tmp_path: Path) -> None:
    data = blob(MiB, "chain")
    with Misbehaving(data) as server:
        proc, _ = copy(server.url_for("/hop/10/file.bin"), tmp_path / "f")
        log = list(server.log)
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "f", data)
    assert [e["path"] for e in log].count("/hop/10/file.bin") == 1  # the chain is followed once
    assert len(log) <= 11 + 3, [e["path"] for e in log]  # the chain, one data request, the checks


@pytest.mark.parametrize("connections", ["1", "4"])
def test_retry_after_an_expired_signed_url_starts_from_the_users_url(
    tmp_path: Path, connections: str
) -> None:
    """/start redirects to a signed URL that works for one request only (the probe uses it):
    each later request must start again from /start, never go back to a used URL twice."""
    data = blob(2 * MiB, "signed")
    with Misbehaving(data) as server:
        proc, evs = copy(
            server.url_for("/start/file.bin"), tmp_path / "f", *CHUNKS, "--connections", connections
        )
        log = list(server.log)
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "f", data)
    signed = [e["path"] for e in log if e["path"].startswith("/signed/")]
    # A used URL is tried at most once more per connection (403), then never again.
    assert 2 <= max(signed.count(p) for p in signed) <= 1 + int(connections)
    assert [e["path"] for e in log].count("/start/file.bin") >= 2  # then from the user's URL again
    assert of_kind(evs, "retry") == []  # handled within the request: no failure to report


# -- 6. bodies without a length ------------------------------------------------------------------

FRAMINGS: dict[str, dict[str, Any]] = {"chunked": {"chunked": True}, "close-delimited": {"no_length": True}}


@pytest.mark.parametrize("framing", FRAMINGS)
def test_body_without_a_length_is_downloaded(tmp_path: Path, framing: str) -> None:
    data = blob(3 * MiB + 5, framing)
    with Misbehaving(data, Behaviour(ranges=False, **FRAMINGS[framing])) as server:
        proc, evs = copy(server.url, tmp_path / "f", *CHUNKS)
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "f", data)
    assert of_kind(evs, "start")[0]["total"] is None  # no total to show: bytes and rate only
    progress = of_kind(evs, "progress")
    assert progress and all(e["total"] is None for e in progress)
    assert done(evs)["size"] == len(data) and done(evs)["resumed_from"] == 0
    assert "does not say how large the file is" in notices(evs)


@pytest.mark.parametrize("good", [True, False], ids=["matching", "truncated"])
def test_body_without_a_length_is_checked_against_the_servers_digest(tmp_path: Path, good: bool) -> None:
    """The digest is the only statement of the whole body such a server can make: a body cut
    short (a close-delimited one cannot say it was) never takes the final name."""
    data = blob(MiB + 3, "u-digest")
    signed = data if good else data + b"the rest that never came"
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(signed).digest()).decode() + ":"
    with Misbehaving(data, Behaviour(ranges=False, no_length=True, repr_digest=digest)) as server:
        proc, _ = copy(server.url, tmp_path / "f")
    if good:
        assert proc.returncode == 0, proc.stderr
        assert finished(tmp_path / "f", data)
    else:
        error_line(proc, 1, str(tmp_path / "f"), "Repr-Digest says", "nothing was promoted")
        assert not (tmp_path / "f").exists()


def test_text_progress_without_a_length_shows_bytes_and_rate(tmp_path: Path) -> None:
    data = blob(MiB, "text")
    with Misbehaving(data, Behaviour(ranges=False, chunked=True)) as server:
        proc = run("copy", "--progress", server.url, tmp_path / "f")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.endswith("/s")]
    assert lines and all(" of " not in line and "ETA" not in line for line in lines), proc.stderr
    assert finished(tmp_path / "f", data)


def test_chunked_body_that_breaks_starts_over_in_the_same_run(tmp_path: Path) -> None:
    data = blob(2 * MiB, "chunked-drop")
    with Misbehaving(data, Behaviour(ranges=False, chunked=True, drop_at={1: MiB + 7})) as server:
        proc, evs = copy(server.url, tmp_path / "f", *CHUNKS)
    assert proc.returncode == 0, proc.stderr
    (retry,) = of_kind(evs, "retry")
    assert "connection broke" in retry["error"]
    assert "starting over from zero" in notices(evs)
    assert done(evs)["resumed_from"] == 0 and finished(tmp_path / "f", data)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_body_without_a_length_after_a_kill_starts_over_cleanly(tmp_path: Path, framing: str) -> None:
    data, dst = blob(4 * MiB, f"kill-{framing}"), tmp_path / "f"
    with Misbehaving(data, Behaviour(ranges=False, **FRAMINGS[framing])) as server:
        committed, _, _ = kill_midway(server.url, dst)
        status = run("status", "--json", tmp_path)
        proc, evs = copy(server.url, dst)
    unfinished = json.loads(status.stdout)
    assert unfinished["size"] is None and unfinished["done"] >= committed  # no total to promise
    assert proc.returncode == 0, proc.stderr
    assert "starting over from zero" in notices(evs)
    assert of_kind(evs, "start")[0]["resumed_from"] == done(evs)["resumed_from"] == 0
    assert finished(dst, data)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_body_without_a_length_resumes_when_the_server_then_gives_ranges(
    tmp_path: Path, framing: str
) -> None:
    """Killed while the server sent no length; the re-run meets the same version (same ETag) with
    a size and byte ranges: it keeps the chunks it has and asks only for the rest."""
    data, dst = blob(4 * MiB, f"later-{framing}"), tmp_path / "f"
    with Misbehaving(data, Behaviour(ranges=False, **FRAMINGS[framing])) as server:
        committed, _, _ = kill_midway(server.url, dst)
        server.behaviour = Behaviour()  # fixed: Content-Length, ranges, the same ETag
        proc, evs = copy(server.url, dst)
        log = list(server.log)
    assert proc.returncode == 0, proc.stderr
    result = done(evs)
    assert result["resumed_from"] >= committed > 0 and result["copied"] == len(data) - result["resumed_from"]
    assert "the server now gives its size and ranges for the same version" in notices(evs)
    assert finished(dst, data)
    asked = [e["range"] for e in log if e["range"] not in (None, "bytes=0-0")]
    assert asked == [f"bytes={result['resumed_from']}-{len(data) - 1}"]  # only the rest


def test_body_without_a_length_of_another_version_is_not_resumed(tmp_path: Path) -> None:
    old, new = blob(4 * MiB, "u-old"), blob(4 * MiB, "u-new")
    dst = tmp_path / "f"
    with Misbehaving(old, Behaviour(ranges=False, chunked=True)) as server:
        kill_midway(server.url, dst)
        server.behaviour = Behaviour()
        server.replace(new)
        proc, evs = copy(server.url, dst)
    assert proc.returncode == 0, proc.stderr
    assert "starting over from zero" in notices(evs)
    assert done(evs)["resumed_from"] == 0 and finished(dst, new)
