"""The pure core of tree copies: the plan (``core.tree``), the tree journal codec
(``core.treejournal``) and where a tree lands (``tree.tree_roots``). No disk anywhere."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onward.core.identity import Identity
from onward.core.journal import DecodeError, decode, encode_start
from onward.core.journal import Header as FileHeader
from onward.core.tree import (
    Artefacts,
    DestTree,
    Kind,
    Node,
    SourceTree,
    TreePlan,
    dir_changes,
    link_leaders,
    plan_tree,
)
from onward.core.treejournal import (
    Counts,
    Stamp,
    TreeHeader,
    decode_tree,
    encode_counts,
    encode_done,
    encode_tree_start,
    is_tree_journal,
)
from onward.jobs.tree import tree_roots

SMALL = 4 << 20
ROOT = "/src"
_ino = iter(range(1000, 10**9))


def file(
    size: int = 10, mtime: int = 5, *, ino: int | None = None, nlink: int = 1, mode: int = 0o644
) -> Node:
    stamp = Stamp(size, mtime, mtime, 1, next(_ino) if ino is None else ino)
    return Node(Kind.FILE, mode, size, mtime, mtime, stamp, nlink)


def directory(mode: int = 0o755, mtime: int = 7) -> Node:
    return Node(Kind.DIR, mode, 4096, mtime, mtime)


def link(target: str) -> Node:
    return Node(Kind.SYMLINK, 0o777, len(target), 3, 3, target=target)


def copy_of(node: Node) -> Node:
    """What the destination holds after a copy: same size, bits and times, its own inode."""
    stamp = None if node.stamp is None else Stamp(node.size, node.mtime_ns, 99, 2, next(_ino))
    return node._replace(stamp=stamp, nlink=1)


def src_tree(entries: dict[str, Node], **kw: object) -> SourceTree:
    return SourceTree(directory(), entries, **kw)  # type: ignore[arg-type]


def mirror(source: SourceTree) -> DestTree:
    entries = {p: copy_of(n) for p, n in source.entries.items() if n.kind is not Kind.SPECIAL}
    listed = {""} | {p for p, n in source.entries.items() if n.kind is Kind.DIR}
    return DestTree(directory(), entries, listed)


def empty_dest() -> DestTree:
    return DestTree(directory(), {}, {""})


def plan(source: SourceTree, dest: DestTree, done: dict[str, Stamp] | None = None, **kw: bool) -> TreePlan:
    return plan_tree(source, dest, done or {}, source_root=ROOT, small=SMALL, **kw)


SAMPLE = {
    "a": directory(),
    "a/one": file(100),
    "a/big": file(SMALL + 1),
    "a/empty": directory(),
    "b": file(0),
    "lnk": link("a/one"),
    "fifo": Node(Kind.SPECIAL, 0o644, 0, 1, 1, what="a FIFO"),
}


# -- the plan ----------------------------------------------------------------------------


def test_an_empty_destination_gets_everything() -> None:
    p = plan(src_tree(dict(SAMPLE)), empty_dest())
    assert p.mkdirs == ["a", "a/empty"]
    assert [(c.path, c.reason, c.batched) for c in p.copies] == [
        ("a/one", "new", True),
        ("a/big", "new", False),
        ("b", "new", True),
    ]
    assert [(s.path, s.target) for s in p.symlinks] == [("lnk", "a/one")]
    assert p.skipped == [("fifo", "is a FIFO; special files are not copied")]
    assert (p.files, p.bytes, p.unchanged_files) == (3, 100 + SMALL + 1, 0)
    assert p.dirs == ["a/empty", "a", ""]  # deepest first, the root last
    assert not p.idle


def test_a_complete_copy_is_idle_and_reads_nothing() -> None:
    source = src_tree(dict(SAMPLE))
    p = plan(source, mirror(source))
    assert p.idle
    assert (p.unchanged_files, p.unchanged_bytes) == (3, 100 + SMALL + 1)
    assert not (p.copies or p.verify or p.modes or p.extras or p.removals)


def test_done_records_are_trusted_only_while_the_source_keeps_its_stamp() -> None:
    node = file(100)
    source = src_tree({"f": node})
    dest = mirror(source)
    assert plan(source, dest, {"f": node.stamp}).idle  # type: ignore[dict-item]
    # Same size and mtime, but the ctime moved (an edit with the mtime set back): copied again.
    assert node.stamp is not None
    edited = node.stamp._replace(ctime_ns=node.stamp.ctime_ns + 1)
    p = plan(source, dest, {"f": edited})
    assert [(c.path, c.reason) for c in p.copies] == [("f", "changed")]
    # Without the times preserved, the DONE record is what says the copy is done.
    dest.entries["f"] = dest.entries["f"]._replace(mtime_ns=12345)
    assert plan(source, dest, {"f": node.stamp}, preserve_times=False).idle
    assert plan(source, dest, {}, preserve_times=False).copies  # no record, no way to tell


def test_changed_new_and_removed_files() -> None:
    source = src_tree({"same": file(10), "grown": file(20), "new": file(5)})
    dest = mirror(src_tree({"same": source.entries["same"], "grown": file(10), "gone": file(1)}))
    p = plan(source, dest)
    assert [(c.path, c.reason) for c in p.copies] == [("grown", "changed"), ("new", "new")]
    assert p.extras == ["gone"] and not p.removals
    p = plan(source, dest, delete=True)
    assert p.removals == ["gone"] and p.deleted == ["gone"] and not p.extras


def test_only_permission_bits_differ() -> None:
    node = file(10, mode=0o600)
    source = src_tree({"f": node})
    dest = mirror(source)
    dest.entries["f"] = dest.entries["f"]._replace(mode=0o644)
    p = plan(source, dest)
    assert p.modes == [("f", 0o600)] and not p.copies
    assert plan(source, dest, preserve_mode=False).idle


def test_verify_full_compares_done_files_instead_of_skipping_them() -> None:
    source = src_tree({"f": file(10)})
    p = plan(source, mirror(source), verify_full=True)
    assert [c.path for c in p.verify] == ["f"] and not p.copies


def test_restart_copies_everything_again() -> None:
    source = src_tree({"f": file(10), "g": file(SMALL * 2)})
    p = plan(source, mirror(source), restart=True)
    assert [(c.path, c.reason) for c in p.copies] == [("f", "restart"), ("g", "restart")]


def test_file_where_a_directory_is_and_the_reverse() -> None:
    source = src_tree({"d": directory(), "d/x": file(), "d/sub": directory(), "d/sub/y": file(), "f": file()})
    dest = DestTree(directory(), {"d": file(), "f": directory()}, {""})
    p = plan(source, dest)
    found = {(c.path, c.source, c.destination, c.hidden) for c in p.conflicts}
    assert found == {("d", Kind.DIR, Kind.FILE, 3), ("f", Kind.FILE, Kind.DIR, 0)}
    assert not p.copies and not p.mkdirs and not p.removals
    assert "d" not in p.dirs and "d/sub" not in p.dirs
    assert "move it away" in next(c for c in p.conflicts if c.path == "d").message
    p = plan(source, dest, delete=True)
    assert p.removals == ["d", "f"] and not p.conflicts and p.deleted == []
    assert p.mkdirs == ["d", "d/sub"] and {c.path for c in p.copies} == {"d/x", "d/sub/y", "f"}


def test_symlinks_are_remade_only_when_their_target_differs() -> None:
    source = src_tree({"l": link("t1"), "m": link("t2")})
    dest = DestTree(directory(), {"l": link("t1"), "m": link("other")}, {""})
    p = plan(source, dest)
    assert [s.path for s in p.symlinks] == ["m"]


def test_hard_links_inside_the_tree() -> None:
    a = file(10, ino=77, nlink=3)
    source = src_tree({"a": a, "b": a, "c": a, "d": file(10, ino=78, nlink=2)})
    assert link_leaders(source.entries) == {"b": "a", "c": "a"}
    p = plan(source, empty_dest())
    assert [c.path for c in p.copies] == ["a", "d"]
    assert [(h.path, h.leader) for h in p.links] == [("b", "a"), ("c", "a")]
    assert (p.files, p.bytes) == (4, 20)  # a group's bytes counted once
    # Already linked in the destination: nothing to do.
    lead = copy_of(a)
    dest = DestTree(
        directory(), {"a": lead, "b": lead, "c": copy_of(a), "d": copy_of(source.entries["d"])}, {""}
    )
    p = plan(source, dest)
    assert [(h.path, h.leader) for h in p.links] == [("c", "a")] and not p.copies


def test_nothing_is_missing_from_a_directory_that_could_not_be_listed() -> None:
    source = src_tree({"locked": directory(), "ok": directory()}, unlisted={"locked"})
    dest = DestTree(
        directory(), {"locked": directory(), "locked/x": file(), "ok": directory(), "ok/y": file()},
        {"", "locked", "ok"},
    )  # fmt: skip
    p = plan(source, dest, delete=True)
    assert p.removals == ["ok/y"]


def test_onward_working_files_ours_and_others() -> None:
    source = src_tree({"big": file(SMALL * 2), "small": file(1), "gone-mine": directory()})
    dest = DestTree(
        directory(),
        {},
        {""},
        {
            "big": Artefacts(file(100), True, f"{ROOT}/big"),  # resumed
            "small": Artefacts(file(100), True, f"{ROOT}/small"),  # a journal it must not use
            "removed": Artefacts(file(5), True, f"{ROOT}/removed"),  # ours, source gone
            "theirs": Artefacts(file(5), True, "/elsewhere/theirs"),  # someone else's copy
            "orphan": Artefacts(file(5), False, None),  # a partial with no journal
            "odd": Artefacts(link("x"), False, None),
        },
    )
    p = plan(source, dest)
    copies = {c.path: c for c in p.copies}
    assert copies["big"].reason == "resume" and not copies["big"].discard_journal
    assert copies["small"].discard_journal and copies["small"].batched
    assert sorted(p.stale) == ["odd", "orphan", "removed"]


def test_a_symlink_left_as_a_partial_is_discarded_before_a_copy() -> None:
    source = src_tree({"f": file(10)})
    dest = DestTree(directory(), {}, {""}, {"f": Artefacts(link("/etc/passwd"), False, None)})
    [copy] = plan(source, dest).copies
    assert copy.discard_partial


def test_dir_changes() -> None:
    node = directory(mode=0o750, mtime=100)
    assert dir_changes(node, 0o40750, 100, preserve_mode=True, preserve_times=True) == (None, None)
    assert dir_changes(node, 0o40700, 5, preserve_mode=True, preserve_times=True) == (0o750, (100, 100))
    assert dir_changes(node, 0o40700, 5, preserve_mode=False, preserve_times=False) == (None, None)


names = st.text(st.sampled_from("abcé\udce9"), min_size=1, max_size=4)


@st.composite
def trees(draw: st.DrawFn) -> SourceTree:
    """Random source trees: directories, files (some hard-linked), symlinks, parents first."""
    entries: dict[str, Node] = {}
    dirs = [""]
    inodes: list[Node] = []
    for _ in range(draw(st.integers(0, 25))):
        where = draw(st.sampled_from(dirs))
        path = f"{where}/{draw(names)}" if where else draw(names)
        if path in entries:
            continue
        kind = draw(st.sampled_from(["dir", "file", "file", "link", "hard"]))
        if kind == "dir":
            entries[path] = directory()
            dirs.append(path)
        elif kind == "link":
            entries[path] = link(draw(names))
        elif kind == "hard" and inodes:
            entries[path] = draw(st.sampled_from(inodes))
        else:
            node = file(draw(st.integers(0, 2 * SMALL)), nlink=draw(st.sampled_from([1, 2])))
            inodes.append(node)
            entries[path] = node
    ordered = dict(sorted(entries.items(), key=lambda kv: (kv[0].count("/"), kv[0])))
    return src_tree(ordered)


@settings(max_examples=200, deadline=None)
@given(trees())
def test_every_entry_of_a_random_tree_is_made_exactly_once(source: SourceTree) -> None:
    p = plan(source, empty_dest())
    files = [path for path, n in source.entries.items() if n.kind is Kind.FILE]
    made = [c.path for c in p.copies] + [h.path for h in p.links]
    assert sorted(made) == sorted(files)
    assert sorted(p.mkdirs) == sorted(path for path, n in source.entries.items() if n.kind is Kind.DIR)
    assert sorted(s.path for s in p.symlinks) == sorted(
        path for path, n in source.entries.items() if n.kind is Kind.SYMLINK
    )
    for hard in p.links:  # a link's file is copied (or linked) before it
        assert made.index(hard.leader) < made.index(hard.path) or hard.leader in [c.path for c in p.copies]
    assert p.files == len(files) and not p.conflicts and not p.extras


@settings(max_examples=200, deadline=None)
@given(trees())
def test_a_random_tree_copied_in_full_is_idle(source: SourceTree) -> None:
    dest = mirror(source)
    # Hard links of one file share one inode in the destination too.
    firsts = link_leaders(source.entries)
    for path, leader in firsts.items():
        dest.entries[path] = dest.entries[leader]
    p = plan(source, dest)
    assert p.idle, p
    assert p.unchanged_files == p.files


# -- the tree journal --------------------------------------------------------------------


HEADER = TreeHeader("/src/caf\udce9", "/dst/caf\udce9", False, 1.5)


def journal_bytes() -> bytes:
    return (
        encode_tree_start(HEADER)
        + encode_counts(Counts(3, 300, 1, 100))
        + encode_done("a/caf\udce9", Stamp(100, -5, 7, 1, 2))
        + encode_done("b", Stamp(200, 6, 7, 1, 3))
    )


def test_tree_journal_round_trip_keeps_names_byte_exact() -> None:
    loaded = decode_tree(journal_bytes())
    assert loaded.header == HEADER
    assert loaded.done == {"a/caf\udce9": Stamp(100, -5, 7, 1, 2), "b": Stamp(200, 6, 7, 1, 3)}
    assert os.fsencode(next(iter(loaded.done))) == b"a/caf\xe9"
    assert loaded.progress == (3, 3, 400, 300) and loaded.damaged_tail == 0


def test_tree_journal_torn_anywhere_keeps_what_came_before() -> None:
    whole = journal_bytes()
    start = len(encode_tree_start(HEADER))
    for cut in range(start, len(whole)):
        loaded = decode_tree(whole[:cut])
        assert loaded.valid_length + loaded.damaged_tail == cut
        assert set(loaded.done) <= {"a/caf\udce9", "b"}
    flipped = bytearray(whole)
    flipped[-3] ^= 0xFF
    loaded = decode_tree(bytes(flipped))
    assert list(loaded.done) == ["a/caf\udce9"] and loaded.damaged_tail > 0


def test_file_and_tree_journals_are_never_mistaken_for_each_other() -> None:
    tree = journal_bytes()
    file_journal = encode_start(FileHeader("/a", "/b", Identity("local", 1), 4096, 1, 0.0))
    assert is_tree_journal(tree) and not is_tree_journal(file_journal)
    with pytest.raises(DecodeError, match="tree"):
        decode(tree)
    with pytest.raises(DecodeError):
        decode_tree(file_journal)
    with pytest.raises(DecodeError):
        decode_tree(b"garbage" * 3)
    with pytest.raises(ValueError):
        encode_done("/absolute", Stamp(1, 1, 1, 1, 1))


# -- where a tree lands: rsync's trailing-slash rule --------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ("/data/photos", "/backup", ("/data/photos", "/backup/photos")),
        ("/data/photos/", "/backup", ("/data/photos", "/backup")),
        ("/data/photos/.", "/backup", ("/data/photos", "/backup")),
        ("/data/photos//", "/backup/", ("/data/photos", "/backup")),
        ("/", "/backup", ("/", "/backup")),
        ("photos", "out", (os.path.abspath("photos"), os.path.abspath("out/photos"))),
    ],
)
def test_tree_roots(src: str, dst: str, expected: tuple[str, str]) -> None:
    assert tree_roots(src, dst) == expected
