"""S3 copies through the real CLI against a real S3 wire-protocol server (moto, tests/s3_server.py).

Uploads are SIGKILLed before their UploadId is journaled, between parts and during
CompleteMultipartUpload, then run again; between runs the store loses a part, holds a
damaged one, forgets the upload (NoSuchUpload) or the file changes. Downloads are killed
and resumed, and the object is replaced between runs. Every finished object or file must be
byte-identical to its source, and no output, journal or status line may hold a credential.
Small parts (the store's minimum is lowered to 4 KiB) make many parts out of a few MiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from s3_server import (
    SECRETS,
    Store,
    assert_no_secret,
    done_event,
    kill_when,
    progress_at,
    run,
    s3_env,
    s3_store,
)

__all__ = ["s3_store"]  # the session fixture, used by name

PART = 32 * 1024
SIZE = 191 * PART + 1234  # 192 parts, the last one short
# Where a run is killed: the copy can run ahead of the test by what the pipe, its stdout buffer and
# the test's reader hold (about 20 KiB of events, some 80 parts: tests/s3_server.py, kill_when),
# so an eighth of the way leaves it well short of the end.
KILL_AT = SIZE // 8


def make(path: Path, size: int = SIZE) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def upload_args(src: Path, url: str, *extra: str) -> list[str]:
    return [str(src), url, "--part-size", str(PART), "--checkpoint-bytes", str(PART), *extra]


def killed_upload(tmp_path: Path, store: Store, *extra: str) -> tuple[dict[str, str], str, Path, str]:
    """An upload of a new file to s3://BUCKET/k killed a third of the way: (env, bucket, file, UploadId)."""
    env, bucket = s3_env(tmp_path, store), store.bucket()
    src = tmp_path / "f.bin"
    make(src)
    kill_when(env, upload_args(src, f"s3://{bucket}/k", *extra), progress_at(KILL_AT))
    (upload,) = store.uploads(bucket)
    return env, bucket, src, str(upload["UploadId"])


def journals(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "state").rglob("*.onward-journal"))


def test_upload_and_download_a_file(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    data = make(tmp_path / "f.bin")
    result = run(env, "copy", *upload_args(tmp_path / "f.bin", f"s3://{bucket}/dir/"))
    assert result.returncode == 0, result.stderr
    assert s3_store.get(bucket, "dir/f.bin") == data
    assert s3_store.uploads(bucket) == []
    assert journals(tmp_path) == []
    back = tmp_path / "back.bin"
    result = run(env, "copy", f"s3://{bucket}/dir/f.bin", str(back), "--connections", "4")
    assert result.returncode == 0, result.stderr
    assert back.read_bytes() == data


def test_small_file_goes_in_one_put_with_its_checksum(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    data = make(tmp_path / "small", 1000)
    result = run(env, "copy", str(tmp_path / "small"), f"s3://{bucket}/s", "--checksum-algorithm", "sha256")
    assert result.returncode == 0, result.stderr
    head = s3_store.client.head_object(Bucket=bucket, Key="s", ChecksumMode="ENABLED")
    assert "-" not in head["ETag"]  # one PutObject, not a multipart upload
    import base64
    import hashlib

    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    back = tmp_path / "back"
    wrong = run(env, "copy", f"s3://{bucket}/s", str(back), "--checksum", "sha256:" + "0" * 64)
    assert wrong.returncode == 1 and "nothing was promoted" in wrong.stderr and not back.exists()
    sha = hashlib.sha256(data).hexdigest()
    assert run(env, "copy", f"s3://{bucket}/s", str(back), "--checksum", f"sha256:{sha}").returncode == 0
    assert back.read_bytes() == data


def test_upload_killed_between_parts_resumes_into_the_same_upload(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    src = tmp_path / "f.bin"
    data = make(src)
    kill_when(env, upload_args(src, f"s3://{bucket}/k"), progress_at(KILL_AT))
    assert len(s3_store.uploads(bucket)) == 1
    for journal in journals(tmp_path):
        assert_no_secret(journal.read_bytes().decode("utf-8", "replace"))
    result = run(env, "copy", "--json", *upload_args(src, f"s3://{bucket}/k"))
    assert result.returncode == 0, result.stderr
    assert s3_store.get(bucket, "k") == data
    assert s3_store.uploads(bucket) == []  # completed, not a second one left behind
    done = done_event(result.stdout)
    assert done["resumed_from"] >= KILL_AT - PART
    assert done["copied"] <= SIZE - done["resumed_from"]


@pytest.mark.parametrize("connections", ["1", "4"])
def test_parts_lost_or_damaged_on_the_store_are_sent_again(
    tmp_path: Path, s3_store: Store, connections: str
) -> None:
    env, bucket, src, upload_id = killed_upload(tmp_path, s3_store, "--connections", connections)
    data = src.read_bytes()
    args = upload_args(src, f"s3://{bucket}/k", "--connections", connections)
    parts = s3_store.client.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)["Parts"]
    assert len(parts) >= 4
    # The store loses part 2 and holds other bytes under part 3's number.
    backend = s3_store.backend_upload(bucket, upload_id)
    backend.parts.pop(2)
    backend.partlist.remove(2)
    s3_store.client.upload_part(
        Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=3, Body=os.urandom(PART)
    )
    result = run(env, "copy", *args)
    assert result.returncode == 0, result.stderr
    assert "sending them again" in result.stderr
    assert s3_store.get(bucket, "k") == data


def test_no_such_upload_starts_a_new_one_with_a_notice(tmp_path: Path, s3_store: Store) -> None:
    env, bucket, src, upload_id = killed_upload(tmp_path, s3_store)
    data = src.read_bytes()
    s3_store.client.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    result = run(env, "copy", *upload_args(src, f"s3://{bucket}/k"))
    assert result.returncode == 0, result.stderr
    assert "no longer has multipart upload" in result.stderr
    assert s3_store.get(bucket, "k") == data


def test_changed_file_aborts_the_old_upload_and_is_never_stitched(tmp_path: Path, s3_store: Store) -> None:
    env, bucket, src, old = killed_upload(tmp_path, s3_store)
    data = make(src)  # same size, new content
    result = run(env, "copy", *upload_args(src, f"s3://{bucket}/k"))
    assert result.returncode == 0, result.stderr
    assert "changed" in result.stderr and old in result.stderr
    assert s3_store.get(bucket, "k") == data
    assert s3_store.uploads(bucket) == []  # the old upload was aborted


def test_killed_before_the_upload_id_was_journaled(tmp_path: Path, s3_store: Store) -> None:
    """The store created the upload but the S3UPLOAD record never reached the journal (a kill
    between the two): strace kills the run at the fdatasync of that record, and the record is
    cut off the journal as a power cut would. The re-run finds the upload by ListMultipartUploads
    instead of leaving it behind, billed."""
    from onward.core.journal import KIND_S3_UPLOAD, frames

    if subprocess.run(["strace", "-V"], capture_output=True).returncode != 0:
        pytest.skip("strace is needed to kill the run at the journal's fdatasync")
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    src = tmp_path / "f.bin"
    data = make(src)
    cmd = [sys.executable, "-m", "onward", "copy", *upload_args(src, f"s3://{bucket}/k")]
    killed = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync", "-e",
         "inject=fdatasync:signal=SIGKILL:when=1", *cmd],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode != 0, killed.stderr
    (upload,) = s3_store.uploads(bucket)
    (journal,) = journals(tmp_path)
    raw = journal.read_bytes()
    records = frames(raw)
    cut = [end for kind, _, end in records if kind == KIND_S3_UPLOAD]
    assert cut, "the run was not killed at the S3UPLOAD record's fdatasync"
    header_end = records[0][2]
    journal.write_bytes(raw[:header_end])
    result = run(env, "copy", *upload_args(src, f"s3://{bucket}/k"))
    assert result.returncode == 0, result.stderr
    assert upload["UploadId"] in result.stderr  # found and adopted
    assert s3_store.get(bucket, "k") == data
    assert s3_store.uploads(bucket) == []


@pytest.mark.parametrize("store_completes", [True, False], ids=["store-completes", "store-fails"])
def test_killed_during_complete_multipart_upload(
    tmp_path: Path, s3_store: Store, monkeypatch: pytest.MonkeyPatch, store_completes: bool
) -> None:
    """The run is killed while the store handles CompleteMultipartUpload; the store then either
    completes it (the answer never reaches the client) or fails it. The re-run finishes either way."""
    from moto.s3.models import S3Backend

    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    src = tmp_path / "f.bin"
    data = make(src)
    entered, release = threading.Event(), threading.Event()
    real = S3Backend.complete_multipart_upload

    def slow(self: Any, bucket_name: str, multipart_id: str, body: Any) -> Any:
        if bucket_name != bucket:
            return real(self, bucket_name, multipart_id, body)
        entered.set()
        assert release.wait(60)
        if not store_completes:
            raise RuntimeError("the store failed")
        return real(self, bucket_name, multipart_id, body)

    monkeypatch.setattr(S3Backend, "complete_multipart_upload", slow)
    proc = subprocess.Popen(
        [sys.executable, "-m", "onward", "copy", *upload_args(src, f"s3://{bucket}/k")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert entered.wait(120), "the upload never reached CompleteMultipartUpload"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    monkeypatch.setattr(S3Backend, "complete_multipart_upload", real)
    result = run(env, "copy", "--json", *upload_args(src, f"s3://{bucket}/k"))
    assert result.returncode == 0, result.stderr
    assert s3_store.get(bucket, "k") == data
    assert s3_store.uploads(bucket) == []
    if store_completes:
        assert "already finished" in result.stdout
    assert done_event(result.stdout)["copied"] == 0  # no part sent again
    assert journals(tmp_path) == []


def test_more_than_1000_parts_resume(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    part, count = 4096, 1400
    src = tmp_path / "f.bin"
    data = make(src, part * count - 7)
    args = [str(src), f"s3://{bucket}/k", "--part-size", str(part), "--checkpoint-bytes", str(64 * part)]
    kill_when(env, args, progress_at(1050 * part))
    result = run(env, "copy", "--json", *args, timeout=300)
    assert result.returncode == 0, result.stderr
    assert done_event(result.stdout)["resumed_from"] > 1000 * part  # the second page of ListParts too
    assert s3_store.get(bucket, "k") == data


def test_download_killed_and_resumed(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    data = os.urandom(64 * 1024 * 1024 + 3)
    s3_store.client.put_object(Bucket=bucket, Key="big", Body=data)
    dst = tmp_path / "big"
    args = [f"s3://{bucket}/big", str(dst), "--chunk-size", "512K", "--checkpoint-bytes", "512K"]
    kill_when(env, args, lambda e: e["event"] == "checkpoint" and e["committed"] >= 4 << 20)
    result = run(env, "copy", "--json", *args)
    assert result.returncode == 0, result.stderr
    assert dst.read_bytes() == data
    assert done_event(result.stdout)["resumed_from"] >= 4 << 20


def test_download_of_a_replaced_object_is_never_stitched(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    s3_store.client.put_object(Bucket=bucket, Key="big", Body=os.urandom(64 * 1024 * 1024))
    dst = tmp_path / "big"
    args = [f"s3://{bucket}/big", str(dst), "--chunk-size", "512K", "--checkpoint-bytes", "512K"]
    kill_when(env, args, lambda e: e["event"] == "checkpoint" and e["committed"] >= 4 << 20)
    new = os.urandom(64 * 1024 * 1024)
    s3_store.client.put_object(Bucket=bucket, Key="big", Body=new)
    result = run(env, "copy", *args)
    assert result.returncode == 0, result.stderr
    assert "changed" in result.stderr
    assert dst.read_bytes() == new


def test_clear_errors(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    make(tmp_path / "f", 100)
    s3_store.client.put_object(Bucket=bucket, Key="dir/x", Body=b"x")
    cases = [
        (["copy", str(tmp_path / "f"), "s3://no-such-bucket-onward/k"], "no such bucket"),
        (["copy", "s3://no-such-bucket-onward/k", str(tmp_path / "g")], "no such bucket"),
        (["copy", f"s3://{bucket}/missing", str(tmp_path / "g")], "no such object"),
        (["copy", f"s3://{bucket}/dir", str(tmp_path / "g")], "is a prefix"),
        (["copy", f"s3://{bucket}/dir/", str(tmp_path / "g")], "prefix"),
        (["copy", str(tmp_path / "f"), "s3://Bad_Bucket!/k"], "not a bucket name"),
        (["copy", str(tmp_path / "f"), f"s3://{bucket}/k", "--profile", "nobody"], "no AWS profile"),
    ]
    for args, expected in cases:
        result = run(env, *args)
        assert result.returncode != 0, args
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_no_credentials_is_a_clear_error(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    make(tmp_path / "f", 100)
    result = run(env, "copy", str(tmp_path / "f"), f"s3://{bucket}/k")
    assert result.returncode == 1
    assert "no usable AWS credentials" in result.stderr


def test_profile_from_aws_files(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name)
    aws = tmp_path / "home" / ".aws"
    aws.mkdir(parents=True)
    (aws / "credentials").write_text(
        f"[other]\naws_access_key_id = {SECRETS[0]}\naws_secret_access_key = {SECRETS[1]}\n"
    )
    (aws / "config").write_text("[profile other]\nregion = eu-west-1\n")
    data = make(tmp_path / "f", 3000)
    result = run(env, "copy", str(tmp_path / "f"), f"s3://{bucket}/k", "--profile", "other")
    assert result.returncode == 0, result.stderr
    assert s3_store.get(bucket, "k") == data


def test_status_lists_and_clean_aborts_unfinished_uploads(tmp_path: Path, s3_store: Store) -> None:
    env, bucket, _, upload_id = killed_upload(tmp_path, s3_store)
    status = run(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    (item,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert item["destination"] == f"s3://{bucket}/k"
    assert item["upload_id"] == upload_id
    clean = run(env, "clean", "--yes")
    assert clean.returncode == 0, clean.stderr
    assert "aborted" in clean.stdout
    assert s3_store.uploads(bucket) == []
    assert journals(tmp_path) == []


def test_local_copies_and_help_do_not_import_the_s3_client(tmp_path: Path) -> None:
    make(tmp_path / "a", 1000)
    for args in (["--help"], ["copy", str(tmp_path / "a"), str(tmp_path / "b")]):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "onward", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert not {m for m in imported if m.split(".")[0] in ("botocore", "boto3", "crc32c")}, args


def test_throttling_is_retried_with_backoff(
    tmp_path: Path, s3_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store answers SlowDown (503) to the first UploadParts; the run waits and goes on."""
    from moto.s3.models import S3Backend
    from werkzeug.exceptions import HTTPException

    class SlowDown(HTTPException):
        code = 503
        description = (
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        )

    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    src = tmp_path / "f.bin"
    data = make(src, 4 * PART)
    refusals = [0]
    real = S3Backend.upload_part

    def busy(self: Any, bucket_name: str, multipart_id: str, part_id: int, value: bytes) -> Any:
        if bucket_name == bucket and refusals[0] < 3:
            refusals[0] += 1
            raise SlowDown()
        return real(self, bucket_name, multipart_id, part_id, value)

    monkeypatch.setattr(S3Backend, "upload_part", busy)
    result = run(env, "copy", *upload_args(src, f"s3://{bucket}/k"))
    assert result.returncode == 0, result.stderr
    assert refusals[0] == 3
    assert s3_store.get(bucket, "k") == data


def test_access_denied_is_a_clear_error(
    tmp_path: Path, s3_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With authentication on, the store does not know the keys: InvalidAccessKeyId (403)."""
    from moto import settings

    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    make(tmp_path / "f", 100)
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    for args in ([str(tmp_path / "f"), f"s3://{bucket}/k"], [f"s3://{bucket}/k", str(tmp_path / "g")]):
        result = run(env, "copy", *args)
        assert result.returncode == 1, result.stderr
        assert "access denied" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_tree_up_and_back_skips_what_is_there_and_resumes(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    files = {
        "a.txt": make(tree / "a.txt", 100),
        "sub/big.bin": make(tree / "sub" / "big.bin", SIZE),
        "sub/c": make(tree / "sub" / "c", 0),
    }
    (tree / "link").symlink_to("a.txt")
    args = ["-r", str(tree), f"s3://{bucket}/p/", "--part-size", str(PART), "--checkpoint-bytes", str(PART)]
    # Killed in the big file's upload; the re-run skips a.txt, resumes big.bin, sends c.
    kill_when(env, args, progress_at(KILL_AT))
    result = run(env, "copy", "--json", *args)
    assert result.returncode == 0, result.stderr
    for rel, data in files.items():
        assert s3_store.get(bucket, f"p/tree/{rel}") == data
    resumed = [json.loads(x) for x in result.stdout.splitlines()]
    (big,) = [e for e in resumed if e["event"] == "done" and e["destination"].endswith("big.bin")]
    assert big["resumed_from"] >= KILL_AT - PART
    again = run(env, "copy", *args)
    assert again.returncode == 0, again.stderr
    assert "0 file(s) copied, 3 already there" in again.stdout
    # And back, into a new directory, by the trailing-slash rule.
    back = tmp_path / "back"
    result = run(env, "copy", "-r", f"s3://{bucket}/p/tree/", str(back))
    assert result.returncode == 0, result.stderr
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data
    again = run(env, "copy", "-r", f"s3://{bucket}/p/tree/", str(back))
    assert "0 file(s) copied, 3 already there" in again.stdout


def test_tree_with_a_failing_file_copies_the_rest_and_exits_23(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    s3_store.client.put_object(Bucket=bucket, Key="p/ok", Body=b"fine")
    s3_store.client.put_object(Bucket=bucket, Key="p/sub/x", Body=b"x")
    back = tmp_path / "back"
    (back / "sub").mkdir(parents=True)
    (back / "sub" / "x").mkdir()  # a directory where the file must go
    result = run(env, "copy", "-r", f"s3://{bucket}/p/", str(back))
    assert result.returncode == 23, result.stderr
    assert "1 of 2 files" in result.stderr
    assert (back / "ok").read_bytes() == b"fine"


def test_download_windows_join_without_a_seam(s3_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks that straddle the end of one ranged GET's window continue in the next one."""
    from onward.core.s3 import S3Url
    from onward.endpoints import s3 as endpoint
    from onward.endpoints import s3source

    bucket = s3_store.bucket()
    data = os.urandom(5 * 1024 * 1024 + 17)
    s3_store.client.put_object(Bucket=bucket, Key="o", Body=data)
    monkeypatch.setattr(s3source, "WINDOW", 1024 * 1024 + 5)
    store = endpoint.Store(s3_store.client, s3_store.endpoint)
    source = s3source.S3Source.open(store, S3Url(bucket, "o"), connections=5)  # shares under the window
    got = bytearray()
    buf = memoryview(bytearray(300 * 1024))
    while len(got) < len(data):
        n = source.read_into(len(got), buf)
        assert n > 0
        got += buf[:n]
    source.close()
    assert bytes(got) == data
