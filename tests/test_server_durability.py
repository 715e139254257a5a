"""The order of the server's system calls, traced with strace: no offset is recorded before the
data it claims has been ``fdatasync``ed, and nothing is promoted before it is durable.

A SIGKILL cannot show this (the page cache survives a killed process); a power cut would lose
exactly what was not synced. So every OFFSET record the server writes is checked against the
trace: some ``fdatasync`` of the data file, finished before that record was written, must have
started after every data write up to that offset had finished.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from peers.servers import OnwardServer

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")

TUS = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
KIND_OFFSET = 9
_LINE = re.compile(r"^(\d+)\s+([\d.]+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((?:(\d+)<([^>]*)>)?(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?\d+).*<([\d.]+)>\s*$")


@dataclass
class Call:
    name: str
    path: str
    args: str
    start: float
    end: float = 0.0
    result: int = 0


def calls(log: Path) -> list[Call]:
    """Every traced call with its start and end time, unfinished/resumed pairs joined."""
    done: list[Call] = []
    open_calls: dict[tuple[str, str], Call] = {}
    for raw in log.read_text(errors="replace").splitlines():
        match = _LINE.match(raw)
        if not match:
            continue
        pid, when, rest = match.group(1), float(match.group(2)), match.group(3)
        resumed = _RESUMED.match(rest)
        if resumed:
            call = open_calls.pop((pid, resumed.group(1)), None)
            tail = resumed.group(2)
        else:
            head = _CALL.match(rest)
            if not head:
                continue
            call = Call(head.group(1), _unhex(head.group(3) or ""), head.group(4), when)
            tail = head.group(4)
            if "<unfinished ...>" in tail:
                open_calls[(pid, call.name)] = call
                continue
        result = _RESULT.search(tail)
        if call is None or not result:
            continue
        call.args = call.args.replace(" <unfinished ...>", "") + tail if resumed else tail
        call.result = int(result.group(1))
        call.end = call.start + float(result.group(2))  # strace -T: time spent in the call
        done.append(call)
    return done


def _unhex(text: str) -> str:
    """strace -xx shows every byte of a string (paths too) as \\xNN."""
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def record_offsets(call: Call) -> Iterator[int]:
    """The OFFSET values in the bytes an info-file pwrite64 wrote (strace -xx shows them as hex)."""
    data = bytes.fromhex(call.args.split('"')[1].replace("\\x", ""))
    pos = 0
    while pos + 5 <= len(data):
        length, kind = struct.unpack_from("<IB", data, pos)
        if kind == KIND_OFFSET and length == 8:
            yield struct.unpack_from("<Q", data, pos + 5)[0]
        pos += 5 + length + 4


def test_no_offset_is_recorded_before_its_data_is_synced(tmp_path: Path) -> None:
    updir = tmp_path / "uploads"
    updir.mkdir()
    log = tmp_path / "strace.log"
    trace: tuple[str, ...] = ("strace", "-f", "-ttt", "-T", "-xx", "-y", "-s", "256", "-o", str(log))
    trace += ("-e", "trace=pwrite64,fdatasync,fsync,rename")
    payload = random.Random(7).randbytes(6 << 20)
    server = OnwardServer(updir, prefix=trace).start()
    try:
        with httpx.Client(base_url=server.origin, timeout=60) as c:
            location = c.post("/files/", headers={**TUS, "Upload-Length": str(len(payload))}).headers[
                "location"
            ]

            def slowly(data: bytes) -> Iterator[bytes]:  # mid-request checkpoints (every 1 s)
                for at in range(0, len(data), 512 * 1024):
                    yield data[at : at + 512 * 1024]
                    time.sleep(0.3)  # a slow client's pace: the behaviour under test

            half = len(payload) // 2
            for start, end in ((0, half), (half, len(payload))):
                headers = {**TUS, "Upload-Offset": str(start)}
                response = c.patch(location, headers=headers, content=slowly(payload[start:end]))
                assert response.status_code == 204
    finally:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            os.kill(int(pid), signal.SIGTERM)
        server.proc.wait(timeout=30) if server.proc else None
    uid = location.rsplit("/", 1)[1]
    assert (updir / uid).read_bytes() == payload

    traced = calls(log)
    part = [c for c in traced if c.path.endswith(f"{uid}.part")]
    writes = [c for c in part if c.name == "pwrite64" and c.result > 0]
    syncs = [c for c in part if c.name == "fdatasync" and c.result == 0]
    records = [c for c in traced if c.name == "pwrite64" and c.path.endswith(f"{uid}.info")]

    def durable_before(moment: float) -> int:
        """The most data a finished fdatasync had covered by ``moment``."""
        best = 0
        for sync in syncs:
            if sync.end <= moment:
                done = [
                    int(w.args.rsplit(",", 1)[1].split(")")[0]) + w.result
                    for w in writes
                    if w.end <= sync.start
                ]
                best = max(best, *done, 0)
        return best

    offsets = [(record.start, value) for record in records for value in record_offsets(record)]
    assert len(offsets) >= 4, "expected checkpoints inside the requests and at their ends"
    assert any(0 < value < len(payload) // 2 for _, value in offsets), "no checkpoint inside a request"
    for moment, value in offsets:
        assert value <= durable_before(moment), f"offset {value} recorded before its data was synced"
    [promotion] = [c for c in traced if c.name == "rename" and f"{uid}.part" in _unhex(c.args)]
    assert durable_before(promotion.start) == len(payload)
