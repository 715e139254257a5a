"""Which entries of a tree a copy leaves out: rsync's include/exclude rules, as pure data.

A rule is ``+ PATTERN`` (include) or ``- PATTERN`` (exclude); the first rule that matches an
entry decides, and an entry no rule matches is included. An excluded directory is not
entered, so nothing below it is copied, listed or (with ``--delete``) removed; to keep
something inside an excluded directory, include the directory first, as with rsync.

Patterns follow rsync's rules (rsync(1), "INCLUDE/EXCLUDE PATTERN RULES"):

- ``*`` matches any run of characters but ``/``; ``**`` matches any run including ``/``;
  ``?`` one character but ``/``; ``[...]`` a character class; ``\\`` quotes the next one.
- A pattern that ends with ``/`` matches directories only.
- A pattern that starts with ``/`` is anchored at the root of the transfer: the paths are
  those below the source root, with the source directory's own name in front when the
  source is given without a trailing slash (``copy -r photos DST`` sees ``photos/a.jpg``,
  ``copy -r photos/ DST`` sees ``a.jpg``), as rsync does.
- Otherwise a pattern with a ``/`` inside, or a ``**``, matches the end of the path at a
  component boundary; one without matches the entry's name alone.
- ``DIR/***`` matches DIR itself and everything below it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

__all__ = ["Filter", "Rule", "parse_rule", "read_rules"]


class Rule(NamedTuple):
    include: bool
    pattern: str  # as given, for messages
    regex: re.Pattern[str]
    whole_path: bool  # matched against the path; else against the name
    dirs_only: bool


def _translate(body: str) -> str:
    """A glob body as a regular expression (no anchors)."""
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if body.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = body.find("]", i + 2 if body[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            inner = body[i + 1 : end]
            if inner[:1] in ("!", "^"):
                inner = "^" + inner[1:]
            out.append("[" + inner.replace("\\", "\\\\") + "]")
            i = end + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(body[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def parse_rule(text: str) -> Rule:
    """``+ PATTERN`` or ``- PATTERN`` (also ``include PATTERN``, ``exclude PATTERN``);
    ValueError for anything else or an empty pattern."""
    kind, sep, pattern = text.partition(" ")
    if not sep or kind not in ("+", "-", "include", "exclude") or not pattern:
        raise ValueError(f"not a rule: {text!r} (use '- PATTERN' or '+ PATTERN')")
    return compile_rule(kind in ("+", "include"), pattern)


def compile_rule(include: bool, pattern: str) -> Rule:
    if not pattern or pattern == "/":
        raise ValueError(f"empty pattern: {pattern!r}")
    anchored = pattern.startswith("/")
    body = pattern[1:] if anchored else pattern
    dirs_only = body.endswith("/") and not body.endswith("\\/")
    body = body.rstrip("/") if dirs_only else body
    tail = ""
    if body.endswith("/***"):
        body, tail = body[:-4], "(?:/.*)?"
    whole = anchored or "/" in body or "**" in body or bool(tail)
    lead = "" if anchored or not whole else "(?:.*/)?"
    regex = re.compile(f"{lead}{_translate(body)}{tail}", re.DOTALL)
    return Rule(include, pattern, regex, whole, dirs_only and not tail)


def read_rules(lines: Iterable[str], *, include: bool) -> list[Rule]:
    """The patterns of an ``--exclude-from`` / ``--include-from`` file: one per line; blank
    lines and lines starting with ``#`` or ``;`` are comments, as rsync reads them."""
    rules = []
    for line in lines:
        pattern = line.rstrip("\r\n")
        if pattern.strip() and not pattern.startswith(("#", ";")):
            rules.append(compile_rule(include, pattern))
    return rules


class Filter:
    """The rules of one copy; ``prefix`` is put before every relative path (the source
    directory's name and ``/`` when the tree is copied as ``DST/NAME``)."""

    __slots__ = ("prefix", "rules")

    def __init__(self, rules: Sequence[Rule], prefix: str = "") -> None:
        self.rules, self.prefix = tuple(rules), prefix

    def excludes(self, rel: str, is_dir: bool) -> bool:
        path = self.prefix + rel
        name = rel.rpartition("/")[2]
        for rule in self.rules:
            if rule.dirs_only and not is_dir:
                continue
            if rule.regex.fullmatch(path if rule.whole_path else name):
                return not rule.include
        return False
