"""rsync's include/exclude rules (``core.filters``), driven with no disk: each case is one
rsync(1) rule written as a path that must or must not be left out."""

from __future__ import annotations

import pytest

from onward.core.filters import Filter, compile_rule, parse_rule, read_rules


def excluded(patterns: list[str], rel: str, *, is_dir: bool = False, prefix: str = "") -> bool:
    return Filter([parse_rule(p) for p in patterns], prefix).excludes(rel, is_dir)


@pytest.mark.parametrize(
    "pattern, rel, is_dir, out",
    [
        ("- *.o", "a.o", False, True),
        ("- *.o", "src/deep/a.o", False, True),  # no slash: the name alone, at any depth
        ("- *.o", "a.oo", False, False),
        ("- a?c", "abc", False, True),
        ("- a?c", "a/c", False, False),  # ? never matches /
        ("- [ab].txt", "b.txt", False, True),
        ("- [!ab].txt", "b.txt", False, False),
        ("- [!ab].txt", "c.txt", False, True),
        ("- /top", "top", False, True),  # anchored at the root of the transfer
        ("- /top", "sub/top", False, False),
        ("- cache/", "cache", True, True),  # a trailing / matches directories only
        ("- cache/", "cache", False, False),
        ("- sub/x", "sub/x", False, True),  # a slash inside: the end of the path
        ("- sub/x", "a/sub/x", False, True),
        ("- sub/x", "asub/x", False, False),  # ... at a component boundary
        ("- sub/*", "sub/x/y", False, False),  # * never crosses /
        ("- sub/**", "sub/x/y", False, True),
        ("- **/tmp", "a/b/tmp", False, True),
        ("- /data/***", "data", True, True),  # DIR/*** : the directory and all below
        ("- /data/***", "data/a/b", False, True),
        ("- /data/***", "database", False, False),
        ("- a\\*b", "a*b", False, True),  # a quoted wildcard is a character
        ("- a\\*b", "axb", False, False),
    ],
)
def test_rsync_pattern_rules(pattern: str, rel: str, is_dir: bool, out: bool) -> None:
    assert excluded([pattern], rel, is_dir=is_dir) is out


def test_the_first_matching_rule_decides() -> None:
    rules = ["+ keep.log", "- *.log"]
    assert not excluded(rules, "keep.log") and excluded(rules, "other.log")
    assert excluded(list(reversed(rules)), "keep.log")
    assert not excluded(rules, "readme")  # no rule matches: included


def test_anchored_rules_see_the_source_name_when_it_is_copied_as_dst_name() -> None:
    # copy -r photos DST: the paths are photos/...; copy -r photos/ DST: they are ...
    assert excluded(["- /photos/raw"], "raw", is_dir=True, prefix="photos/")
    assert not excluded(["- /raw"], "raw", is_dir=True, prefix="photos/")
    assert excluded(["- /raw"], "raw", is_dir=True)
    assert excluded(["- raw"], "raw", is_dir=True, prefix="photos/")  # unanchored: the name


def test_rule_files_skip_comments_and_blank_lines() -> None:
    rules = read_rules(["# comment\n", "; another\n", "\n", "*.tmp\n", "/build/\r\n"], include=False)
    assert [r.pattern for r in rules] == ["*.tmp", "/build/"]
    assert Filter(rules).excludes("build", True) and not Filter(rules).excludes("x/build", True)


@pytest.mark.parametrize("bad", ["", "*.o", "? x", "+", "- "])
def test_a_rule_without_a_kind_or_a_pattern_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(bad)


def test_an_empty_pattern_is_refused() -> None:
    with pytest.raises(ValueError):
        compile_rule(False, "")
