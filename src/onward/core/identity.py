"""What makes a source "the same" as the one a journal was made from.

Each endpoint describes its source as an ``Identity``: a kind, a size and the
attributes that change whenever the content may have changed. Local files use
device, inode, mtime_ns and ctime_ns (ctime catches an mtime set back by hand);
remote endpoints will use their validators. ``matches`` is the only rule, so a
resume and the final check can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = ["Identity", "matches", "one_response"]


NO_ATTRS: Mapping[str, int | str] = MappingProxyType({})


class Identity(NamedTuple):
    kind: str
    size: int
    attrs: Mapping[str, int | str] = NO_ATTRS

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": self.size, "attrs": dict(self.attrs)}

    @classmethod
    def from_json(cls, data: Any) -> Identity:
        if not isinstance(data, dict):
            raise ValueError("identity is not an object")
        kind, size, attrs = data.get("kind"), data.get("size"), data.get("attrs", {})
        if not isinstance(kind, str) or not isinstance(size, int) or not isinstance(attrs, dict):
            raise ValueError("identity has missing or mistyped fields")
        if not all(isinstance(v, int | str) for v in attrs.values()):
            raise ValueError("identity attributes must be numbers or strings")
        return cls(kind, size, attrs)


def matches(recorded: Identity, current: Identity) -> bool:
    """True when ``current`` is provably the content ``recorded`` described."""
    return (
        recorded.kind == current.kind
        and recorded.size == current.size
        and dict(recorded.attrs) == dict(current.attrs)
    )


def one_response(identity: Identity) -> bool:
    """True for a download only one uninterrupted response can finish (its server gives no byte
    ranges, no validator or no length): nothing ties a second response to the first, so its partial
    cannot be resumed and a re-run starts over (``HttpSource`` records the response it read)."""
    return "response" in identity.attrs
