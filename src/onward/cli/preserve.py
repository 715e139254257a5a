"""``--preserve LIST`` and ``--no-preserve LIST``: which attributes a copy keeps, as cp reads them."""

from __future__ import annotations

from typing import Any

from ..endpoints.metadata import wanted
from ..errors import UsageError
from ..options import PRESERVE_ITEMS

__all__ = ["preserve_options"]

BITS = {"mode": "preserve_mode", "timestamps": "preserve_times"}  # Options fields, on by default
ALIASES = {"ownership": ("owner", "group"), "xattr": ("xattrs",), "acl": ("acls",)}  # cp's words
EXTRA = sorted(PRESERVE_ITEMS)  # Options.preserve
KNOWN = "mode, timestamps, owner, group, xattrs, acls or all"


def _items(text: str, flag: str) -> list[str]:
    items: list[str] = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        if item == "all":
            items += [*BITS, *EXTRA]
        elif item == "links":
            continue  # cp's: a tree keeps hard links always
        elif item in ALIASES:
            items += ALIASES[item]
        elif item in BITS or item in EXTRA:
            items.append(item)
        else:
            raise UsageError(f"{flag}: unknown attribute {item!r} ({KNOWN})")
    return items


def preserve_options(preserve: str, no_preserve: str) -> dict[str, Any]:
    """The ``Options`` fields the two lists set (``--no-preserve`` wins where both name one);
    ``preserve`` is left out (its default: owner and group for root) when neither names it."""
    given, dropped = _items(preserve, "--preserve"), _items(no_preserve, "--no-preserve")
    opts: dict[str, Any] = {field: False for item, field in BITS.items() if item in dropped}
    if any(item in EXTRA for item in (*given, *dropped)):
        keep = (wanted(None) | {i for i in given if i in EXTRA}) - set(dropped)
        opts["preserve"] = frozenset(keep)
    return opts
