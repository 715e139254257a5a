"""S3 tree copies (``onward copy -r``) through the real CLI against moto (tests/s3_server.py).

A tree killed in the middle of its big file resumes from the tree journal: files it recorded
done are skipped without being read, unless the file or its object changed since; the file in
flight resumes its multipart upload or ranged download. ``--delete`` removes what the source
lacks, only once every file is copied. Symlinks are skipped with a notice (``-L`` uploads what
they point to), and a "directory" marker object downloads as a directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from s3_server import Store, kill_when, progress_at, run, s3_env, s3_store

__all__ = ["s3_store"]  # the session fixture, used by name

PART = 32 * 1024
BIG = 96 * PART + 77
PART_ARGS = ["--part-size", str(PART), "--checkpoint-bytes", str(PART)]


def write(path: Path, size: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def make_tree(root: Path) -> dict[str, bytes]:
    """a, b, c small (copied first: os.walk lists a directory's files before its subdirectories),
    then sub/big, many parts."""
    return {
        rel: write(root / rel, size) for rel, size in (("a", 100), ("b", 200), ("c", 300), ("sub/big", BIG))
    }


def tree_journals(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "state").rglob("*.onward-s3tree"))


def test_upload_tree_killed_midway_resumes_from_the_tree_journal(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    files = make_tree(tmp_path / "t")
    args = ["-r", str(tmp_path / "t") + "/", f"s3://{bucket}/p/", *PART_ARGS]
    kill_when(env, args, progress_at(BIG // 3))
    assert len(tree_journals(tmp_path)) == 1
    # Between runs: b changes (same size), a's object is replaced by another writer (same size).
    files["b"] = write(tmp_path / "t" / "b", 200)
    s3_store.client.put_object(Bucket=bucket, Key="p/a", Body=os.urandom(100))
    result = run(env, "copy", *args)
    assert result.returncode == 0, result.stderr
    # c was skipped from the journal without a read; a and b were sent again; big was resumed.
    assert "3 file(s) copied, 1 already there (1 known from the tree journal)" in result.stdout, result.stdout
    for rel, data in files.items():
        assert s3_store.get(bucket, f"p/{rel}") == data
    assert s3_store.uploads(bucket) == []
    assert tree_journals(tmp_path) == []  # a finished tree drops its journal
    again = run(env, "copy", *args)
    assert "0 file(s) copied, 4 already there" in again.stdout, again.stdout


def test_download_tree_killed_midway_resumes_from_the_tree_journal(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    files = {rel: os.urandom(size) for rel, size in (("a", 100), ("b", 200), ("sub/big", 40 * 1024 * 1024))}
    for rel, data in files.items():
        s3_store.client.put_object(Bucket=bucket, Key=f"p/{rel}", Body=data)
    back = tmp_path / "back"
    args = ["-r", f"s3://{bucket}/p/", str(back), "--checkpoint-bytes", str(1 << 20)]
    kill_when(env, args, progress_at(8 << 20))
    # Between runs: the object of b is replaced (same size): it must be fetched again.
    files["b"] = os.urandom(200)
    s3_store.client.put_object(Bucket=bucket, Key="p/b", Body=files["b"])
    result = run(env, "copy", *args)
    assert result.returncode == 0, result.stderr
    assert "2 file(s) copied, 1 already there (1 known from the tree journal)" in result.stdout, result.stdout
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data
    assert tree_journals(tmp_path) == []


def test_delete_removes_what_the_source_lacks_up_and_down(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    src = tmp_path / "t"
    write(src / "keep", 10)
    write(src / "d" / "keep2", 10)
    for key in ("p/gone", "p/d/gone", "p/e/gone", "other/stay"):
        s3_store.client.put_object(Bucket=bucket, Key=key, Body=b"x")
    result = run(env, "copy", "-r", "--delete", str(src) + "/", f"s3://{bucket}/p/")
    assert result.returncode == 0, result.stderr
    assert "2 file(s) copied, 0 already there, 3 deleted" in result.stdout, result.stdout
    listed = s3_store.client.list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(str(item["Key"]) for item in listed) == ["other/stay", "p/d/keep2", "p/keep"]

    back = tmp_path / "back"
    write(back / "extra", 5)
    write(back / "x" / "y" / "extra", 5)
    write(back / "d" / "extra", 5)
    (back / "link").symlink_to(back / "d")
    result = run(env, "copy", "-r", "--delete", f"s3://{bucket}/p/", str(back))
    assert result.returncode == 0, result.stderr
    found = sorted(str(p.relative_to(back)) for p in back.rglob("*"))
    assert found == ["d", "d/keep2", "keep"]


def test_delete_is_not_done_when_a_file_failed(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    s3_store.client.put_object(Bucket=bucket, Key="p/ok", Body=b"fine")
    s3_store.client.put_object(Bucket=bucket, Key="p/x", Body=b"x")
    back = tmp_path / "back"
    (back / "x").mkdir(parents=True)  # a directory where the file must go
    write(back / "extra", 5)
    result = run(env, "copy", "-r", "--delete", f"s3://{bucket}/p/", str(back))
    assert result.returncode == 23, result.stderr
    assert (back / "ok").read_bytes() == b"fine"
    assert (back / "extra").exists()


def test_symlinks_are_skipped_with_a_notice_or_followed_with_L(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    src = tmp_path / "t"
    data = write(src / "real", 50)
    (src / "empty").mkdir()
    (src / "link").symlink_to("real")
    result = run(env, "copy", "-r", str(src) + "/", f"s3://{bucket}/p/")
    assert result.returncode == 0, result.stderr
    assert "link" in result.stderr and "symlink" in result.stderr, result.stderr
    listed = s3_store.client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [str(item["Key"]) for item in listed] == ["p/real"]  # no symlink, no empty directory
    result = run(env, "copy", "-r", "-L", str(src) + "/", f"s3://{bucket}/q/")
    assert result.returncode == 0, result.stderr
    assert s3_store.get(bucket, "q/link") == data


def test_a_directory_marker_downloads_as_a_directory(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    s3_store.client.put_object(Bucket=bucket, Key="p/empty/", Body=b"")
    s3_store.client.put_object(Bucket=bucket, Key="p/f", Body=b"f")
    back = tmp_path / "back"
    result = run(env, "copy", "-r", f"s3://{bucket}/p/", str(back))
    assert result.returncode == 0, result.stderr
    assert (back / "empty").is_dir() and (back / "f").read_bytes() == b"f"
