"""Owner, group, xattrs and ACLs through the real CLI (``--preserve``, ``--no-preserve``;
docs/CLI.md): kept as root by default (owner, group) or when asked (xattrs, ACLs), applied
before the rename, kept across a kill -9, and one notice per cause where they cannot be."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Cli = Callable[..., subprocess.CompletedProcess[str]]
Events = Callable[[str], list[dict[str, Any]]]

OWNER, GROUP = 4321, 8765  # ids nobody on the machine needs to have
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to other owners needs root")


def acl_tools() -> None:
    for tool in ("setfacl", "getfacl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian package acl; ./scripts/test installs it)")


def setfacl(*args: str | Path) -> None:
    subprocess.run(["setfacl", *[os.fspath(a) for a in args]], check=True, capture_output=True)


def getfacl(path: Path) -> str:
    """The ACL of ``path`` without the header that names the file (entries only)."""
    out = subprocess.run(
        ["getfacl", "--omit-header", "--numeric", "--absolute-names", os.fspath(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out


def xattrs(path: Path, follow: bool = True) -> dict[str, bytes]:
    """The user.* attributes of ``path``."""
    names = os.listxattr(path, follow_symlinks=follow)
    return {n: os.getxattr(path, n, follow_symlinks=follow) for n in names if n.startswith("user.")}


def owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def notices(stderr: str, what: str) -> list[str]:
    return [line for line in stderr.splitlines() if f"{what} not kept" in line]


def make_tree(root: Path, data: bytes) -> None:
    """A tree of a big file, small files, a subdirectory and a symlink, all owned by
    OWNER:GROUP, each file and directory with a user.* attribute."""
    (root / "sub").mkdir(parents=True)
    (root / "big").write_bytes(data)
    (root / "sub" / "small").write_bytes(b"small file")
    (root / "sub" / "other").write_bytes(b"another")
    (root / "sub" / "link").symlink_to("small")
    for path in (root / "big", root / "sub" / "small", root / "sub" / "other", root / "sub", root):
        os.setxattr(path, "user.origin", f"of {path.name}".encode())
        os.chown(path, OWNER, GROUP)
    os.lchown(root / "sub" / "link", OWNER + 1, GROUP + 1)


@needs_root
def test_root_keeps_owner_and_group_by_default(
    tmp_path: Path, onward_cli: Cli, onward_random_file: Callable[[Path, int], bytes]
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, onward_random_file(tmp_path / "data", 5 << 20))
    one = onward_cli("copy", src / "big", tmp_path / "big")
    assert one.returncode == 0, one.stderr
    assert owner(tmp_path / "big") == (OWNER, GROUP)
    tree = onward_cli("copy", "-r", src, dst)
    assert tree.returncode == 0, tree.stderr
    copied = dst / "src"
    for rel in ("", "big", "sub", "sub/small", "sub/other"):
        assert owner(copied / rel) == (OWNER, GROUP), rel
    assert owner(copied / "sub" / "link") == (OWNER + 1, GROUP + 1)
    assert os.readlink(copied / "sub" / "link") == "small"
    # xattrs are not kept unless asked for (cp -a keeps them; rsync -a does not: onward as rsync)
    assert xattrs(copied / "big") == {} and xattrs(tmp_path / "big") == {}


@needs_root
def test_no_preserve_drops_owner_and_group(
    tmp_path: Path, onward_cli: Cli, onward_random_file: Callable[[Path, int], bytes]
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, onward_random_file(tmp_path / "data", 5 << 20))
    one = onward_cli("copy", "--no-preserve=owner,group", src / "big", tmp_path / "big")
    assert one.returncode == 0, one.stderr
    assert owner(tmp_path / "big") == (0, 0)
    only_owner = onward_cli("copy", "--no-preserve=owner", src / "big", tmp_path / "big2")
    assert only_owner.returncode == 0, only_owner.stderr
    assert owner(tmp_path / "big2") == (0, GROUP)
    tree = onward_cli("copy", "-r", "--no-preserve=all", src, dst)
    assert tree.returncode == 0, tree.stderr
    for rel in ("", "big", "sub", "sub/small", "sub/link"):
        assert owner(dst / "src" / rel) == (0, 0), rel


def test_preserve_keeps_xattrs_and_acls(
    tmp_path: Path, onward_cli: Cli, onward_random_file: Callable[[Path, int], bytes]
) -> None:
    acl_tools()
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, onward_random_file(tmp_path / "data", 5 << 20))
    setfacl("-m", "u:1234:rw,g:2345:r", src / "big")
    setfacl("-m", "u:1234:r", src / "sub" / "small")
    setfacl("-m", "u:1234:rwx", src / "sub")
    setfacl("-d", "-m", "u:1234:rx", src / "sub")
    one = onward_cli("copy", "--preserve=xattrs,acls", src / "big", tmp_path / "big")
    assert one.returncode == 0, one.stderr
    assert xattrs(tmp_path / "big") == {"user.origin": b"of big"}
    assert getfacl(tmp_path / "big") == getfacl(src / "big")
    assert "user:1234:rw-" in getfacl(tmp_path / "big")
    tree = onward_cli("copy", "-r", "--preserve=all", src, dst)
    assert tree.returncode == 0, tree.stderr
    assert tree.stderr == ""
    copied = dst / "src"
    for rel in ("", "big", "sub", "sub/small", "sub/other"):
        assert xattrs(copied / rel) == xattrs(src / rel), rel
        assert getfacl(copied / rel) == getfacl(src / rel), rel
        assert (copied / rel).stat().st_mode == (src / rel).stat().st_mode, rel
    assert "default:user:1234:r-x" in getfacl(copied / "sub")
    # A file without an ACL gets none, even below a directory whose default ACL it inherits.
    (src / "sub" / "new").write_bytes(b"added later")
    setfacl("-b", src / "sub" / "new")  # its inherited ACL removed: the source has none
    again = onward_cli("copy", "-r", "--preserve=all", src, dst)
    assert again.returncode == 0, again.stderr
    assert getfacl(copied / "sub" / "new") == getfacl(src / "sub" / "new")
    assert "user:1234" not in getfacl(copied / "sub" / "new")
    without = onward_cli("copy", "-r", src, tmp_path / "plain")
    assert without.returncode == 0, without.stderr
    assert xattrs(tmp_path / "plain" / "src" / "big") == {}
    assert "user:1234" not in getfacl(tmp_path / "plain" / "src" / "big")


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A ramfs mounted for the test: a real file system that keeps owners but refuses every
    extended attribute and ACL (EOPNOTSUPP). Skips unless this process may mount one."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a ramfs needs root and the mount command")
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a ramfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_refusing_file_system_gives_one_notice_per_cause(
    tmp_path: Path, ramfs: Path, onward_cli: Cli, onward_events: Events
) -> None:
    acl_tools()
    src = tmp_path / "src"
    make_tree(src, b"big enough" * 100_000)
    setfacl("-m", "u:1234:rw", src / "big")
    setfacl("-m", "u:1234:r", src / "sub" / "small")
    run = onward_cli("copy", "-r", "--preserve=all", src, ramfs)
    assert run.returncode == 0, run.stderr
    for what in ("extended attributes", "ACLs"):
        said = notices(run.stderr, what)
        assert len(said) == 1, run.stderr
        assert str(ramfs / "src") in said[0] and "Operation not supported" in said[0], said
    assert len(run.stderr.splitlines()) == 2, run.stderr
    copied = ramfs / "src"
    for rel in ("big", "sub/small", "sub/other"):
        assert (copied / rel).read_bytes() == (src / rel).read_bytes(), rel
        assert owner(copied / rel) == (OWNER, GROUP), rel
        assert (copied / rel).stat().st_mode == (src / rel).stat().st_mode, rel
        assert (copied / rel).stat().st_mtime_ns == (src / rel).stat().st_mtime_ns, rel
    assert sorted(p.name for p in (copied / "sub").iterdir()) == ["link", "other", "small"]
    # Nothing to keep, nothing to say: a tree without xattrs or ACLs gets no notice at all.
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "sub" / "file").write_bytes(b"no attributes")
    quiet = onward_cli("copy", "-r", "--preserve=all", plain, ramfs / "plain")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    # --json: the notice is an event, once.
    single = onward_cli("copy", "--json", "--preserve=xattrs", src / "big", ramfs / "one")
    assert single.returncode == 0, single.stderr
    events = [e for e in onward_events(single.stdout) if e["event"] == "notice"]
    assert len(events) == 1 and events[0]["destination"] == str(ramfs / "one"), events
    assert "extended attributes not kept" in events[0]["message"]
    assert (ramfs / "one").read_bytes() == (src / "big").read_bytes()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="onward-preserve-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_non_root_asking_for_owner_gets_a_notice(shared_dir: Path, onward_cli: Cli) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run the copy as another user")
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    probe = subprocess.run(
        [*as_nobody, sys.executable, "-c", "import onward"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"onward cannot be imported as uid {NOBODY} from here: {probe.stderr.strip()[-200:]}")
    src, out = shared_dir / "src", shared_dir / "out"
    src.mkdir()
    out.mkdir()
    os.chown(out, NOBODY, NOBODY)
    for name in ("a", "b"):
        (src / name).write_bytes(b"readable by all")
        os.chown(src / name, OWNER, GROUP)
    asked = onward_cli("copy", "-r", "--preserve=owner,group", src, out, prefix=as_nobody)
    assert asked.returncode == 0, asked.stderr
    said = notices(asked.stderr, "owner")
    assert len(said) == 1 and "only root" in said[0], asked.stderr
    assert len(notices(asked.stderr, "group")) == 1, asked.stderr
    for name in ("a", "b"):
        assert owner(out / "src" / name) == (NOBODY, NOBODY)
        assert (out / "src" / name).read_bytes() == b"readable by all"
    # Not asked: a non-root copy does not try (the default is owner and group for root only).
    plain = onward_cli("copy", "-r", src, out / "plain", prefix=as_nobody)
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr


@needs_root
def test_killed_copy_resumes_and_ends_with_the_metadata(
    tmp_path: Path,
    onward_cli: Cli,
    onward_kill_midway: Callable[..., int],
    onward_random_file: Callable[[Path, int], bytes],
) -> None:
    acl_tools()
    src, dst = tmp_path / "src", tmp_path / "copy"
    data = onward_random_file(src, 8 << 20)
    os.setxattr(src, "user.origin", b"kept across a kill")
    setfacl("-m", "u:1234:rw", src)
    os.chown(src, OWNER, GROUP)
    committed = onward_kill_midway(src, dst, "--preserve=all")
    assert committed < len(data) and not dst.exists()
    again = onward_cli("copy", "--preserve=all", src, dst)
    assert again.returncode == 0, again.stderr
    assert dst.read_bytes() == data
    assert owner(dst) == (OWNER, GROUP)
    assert xattrs(dst) == {"user.origin": b"kept across a kill"}
    assert getfacl(dst) == getfacl(src)


@needs_root
def test_metadata_is_on_the_partial_before_the_rename(tmp_path: Path, onward_cli: Cli) -> None:
    """The final name never shows the wrong owner or attributes: every fchown and fsetxattr
    of the copy comes before the rename that gives it that name."""
    if shutil.which("strace") is None:
        pytest.skip("strace is needed to see the order of the system calls")
    src, dst, trace = tmp_path / "src", tmp_path / "copy", tmp_path / "trace"
    src.write_bytes(b"x" * 100_000)
    os.setxattr(src, "user.origin", b"before the rename")
    os.chown(src, OWNER, GROUP)
    calls = "fchown,fsetxattr,fchmod,rename,renameat,renameat2"
    run = onward_cli("copy", "--preserve=xattrs", src, dst, prefix=["strace", "-f", "-o", trace, "-e", calls])
    assert run.returncode == 0, run.stderr
    lines = [line for line in trace.read_text().splitlines() if "resumed>" not in line]
    rename = next(i for i, line in enumerate(lines) if "rename" in line and f'"{dst}"' in line)
    for call in ("fchown(", "fsetxattr(", "fchmod("):
        before = [i for i, line in enumerate(lines) if call in line and "= 0" in line]
        assert before and max(before) < rename, (call, lines)
    assert owner(dst) == (OWNER, GROUP) and xattrs(dst) == {"user.origin": b"before the rename"}


def test_preserve_usage_and_dry_run(tmp_path: Path, onward_cli: Cli) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"data")
    bad = onward_cli("copy", "--preserve=owner,colour", src, tmp_path / "x")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "'colour'" in bad.stderr, bad.stderr
    assert not (tmp_path / "x").exists()
    dry = onward_cli("copy", "-n", "--preserve=all", src, tmp_path / "x")
    assert dry.returncode == 0, dry.stderr
    assert "nothing was written" in dry.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@needs_root
def test_killed_tree_copy_resumes_and_ends_with_the_metadata(
    tmp_path: Path,
    onward_cli: Cli,
    onward_kill_midway: Callable[..., int],
    onward_random_file: Callable[[Path, int], bytes],
) -> None:
    acl_tools()
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, onward_random_file(tmp_path / "data", 8 << 20))
    setfacl("-m", "u:1234:rw", src / "big")
    setfacl("-d", "-m", "u:1234:rx", src / "sub")
    dst.mkdir()
    onward_kill_midway(src, dst, "-r", "--preserve=all")
    assert not (dst / "src" / "big").exists()
    again = onward_cli("copy", "-r", "--preserve=all", src, dst)
    assert again.returncode == 0, again.stderr
    copied = dst / "src"
    assert (copied / "big").read_bytes() == (src / "big").read_bytes()
    for rel in ("", "big", "sub", "sub/small", "sub/other"):
        assert owner(copied / rel) == (OWNER, GROUP), rel
        assert xattrs(copied / rel) == xattrs(src / rel), rel
        assert getfacl(copied / rel) == getfacl(src / rel), rel
    assert owner(copied / "sub" / "link") == (OWNER + 1, GROUP + 1)
