"""Structured Field Values for HTTP (RFC 9651, which obsoletes RFC 8941): the parser.

The fields onward reads are Structured Fields: ``Upload-Complete: ?1``,
``Upload-Offset: 42``, ``Upload-Limit: max-size=1000, max-append-size=100`` (the
resumable-upload draft) and ``Repr-Digest`` / ``Content-Digest: sha-256=:BASE64:``
(RFC 9530). One parser, written from the RFC's algorithms (§4.2), serves them all;
a field that does not parse is ignored as a whole, as the RFC requires, so callers
get ``SFError`` (or None from ``item_value``) and treat the field as absent.

Here rather than the ``http-sf`` package: this module imports in well under a
millisecond, that package (with ``typing_extensions`` and ``inspect``) in about 30 ms,
and the CLI has 150 ms for its whole start-up. Values map to Python types: Integer
``int``, Decimal ``float``, String ``str``, Token ``Token``, Byte Sequence ``bytes``,
Boolean ``bool``, Date ``Date``, Display String ``DisplayString``.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple, TypeVar

__all__ = [
    "Date",
    "DisplayString",
    "InnerList",
    "Item",
    "SFError",
    "Token",
    "item_value",
    "parse_dictionary",
    "parse_item",
    "parse_list",
]

T = TypeVar("T")


class SFError(ValueError):
    """The field is not a valid Structured Field of the type asked for: ignore it whole."""


class Token(str):
    """A Token (``foo123/456``), as distinct from a String."""


class DisplayString(str):
    """A Display String (``%"caf%c3%a9"``), decoded."""


class Date(int):
    """A Date (``@1659578233``): seconds since the epoch."""


BareItem = int | float | str | bytes | bool
Parameters = dict[str, BareItem]


class Item(NamedTuple):
    value: BareItem
    params: Parameters


class InnerList(NamedTuple):
    items: list[Item]
    params: Parameters


Member = Item | InnerList

_DIGITS = frozenset("0123456789")
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_ALPHA = _LOWER + _LOWER.upper()
_KEY_FIRST = frozenset(_LOWER + "*")
_KEY = frozenset(_LOWER + "0123456789_-.*")
_TOKEN_FIRST = frozenset(_ALPHA + "*")
_TOKEN = frozenset(_ALPHA + "0123456789!#$%&'*+-.^_`|~:/")
_BASE64 = frozenset(_ALPHA + "0123456789+/=")
_HEX = frozenset("0123456789abcdef")


class _Input:
    """The characters of a field value not consumed yet."""

    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise SFError("a structured field is ASCII")
        self.text = text.strip(" ")
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def take(self) -> str:
        char = self.peek()
        if not char:
            raise SFError("the field ends too early")
        self.pos += 1
        return char

    def expect(self, char: str) -> None:
        if self.take() != char:
            raise SFError(f"expected {char!r} at {self.pos - 1}")

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1

    def done(self) -> bool:
        return self.pos >= len(self.text)


def parse_item(text: str) -> Item:
    """An Item field (RFC 9651 §4.2.3); ``SFError`` when it is not one."""
    data = _Input(text)
    item = _item(data)
    if not data.done():
        raise SFError("more after the item")
    return item


def parse_list(text: str) -> list[Member]:
    """A List field (§4.2.1); ``SFError`` when it is not one."""
    data = _Input(text)
    members: list[Member] = []
    while not data.done():
        members.append(_member(data))
        if _next_member(data):
            break
    return members


def parse_dictionary(text: str) -> dict[str, Member]:
    """A Dictionary field (§4.2.2); ``SFError`` when it is not one. A repeated key keeps its
    last value."""
    data = _Input(text)
    members: dict[str, Member] = {}
    while not data.done():
        key = _key(data)
        if data.peek() == "=":
            data.take()
            members[key] = _member(data)
        else:
            members[key] = Item(True, _parameters(data))
        if _next_member(data):
            break
    return members


def item_value(text: str | None, kind: type[T]) -> T | None:
    """The value of an Item field if it is a ``kind`` (``int``, ``bool``, ...), its parameters
    ignored; None when the field is absent, malformed or of another type."""
    if text is None:
        return None
    try:
        value = parse_item(text).value
    except SFError:
        return None
    return value if type(value) is kind else None  # bool is an int in Python: not here


def _next_member(data: _Input) -> bool:
    """Past the comma between members; True when the field ended instead."""
    data.skip(" \t")
    if data.done():
        return True
    data.expect(",")
    data.skip(" \t")
    if data.done():
        raise SFError("a trailing comma")
    return False


def _member(data: _Input) -> Member:
    return _inner_list(data) if data.peek() == "(" else _item(data)


def _inner_list(data: _Input) -> InnerList:
    data.expect("(")
    items: list[Item] = []
    while True:
        data.skip(" ")
        if data.peek() == ")":
            data.take()
            return InnerList(items, _parameters(data))
        items.append(_item(data))
        if data.peek() not in (" ", ")"):
            raise SFError("items of an inner list are separated by spaces")


def _item(data: _Input) -> Item:
    value = _bare_item(data)
    return Item(value, _parameters(data))


def _parameters(data: _Input) -> Parameters:
    params: Parameters = {}
    while data.peek() == ";":
        data.take()
        data.skip(" ")
        key = _key(data)
        value: BareItem = True
        if data.peek() == "=":
            data.take()
            value = _bare_item(data)
        params[key] = value
    return params


def _key(data: _Input) -> str:
    if data.peek() not in _KEY_FIRST or not data.peek():
        raise SFError("a key starts with a lowercase letter or '*'")
    start = data.pos
    while data.peek() and data.peek() in _KEY:
        data.pos += 1
    return data.text[start : data.pos]


def _bare_item(data: _Input) -> BareItem:
    char = data.peek()
    if char == "-" or (char and char in _DIGITS):
        return _number(data)
    if char == '"':
        return _string(data)
    if char and char in _TOKEN_FIRST:
        return _token(data)
    if char == ":":
        return _bytes(data)
    if char == "?":
        data.take()
        flag = data.take()
        if flag not in ("0", "1"):
            raise SFError("a boolean is ?0 or ?1")
        return flag == "1"
    if char == "@":
        data.take()
        when = _number(data)
        if type(when) is not int:
            raise SFError("a date is an integer")
        return Date(when)
    if char == "%":
        return _display_string(data)
    raise SFError(f"no item starts with {char!r}")


def _number(data: _Input) -> int | float:
    sign = -1 if data.peek() == "-" else 1
    if sign < 0:
        data.take()
    start, point = data.pos, -1
    while data.peek() and (data.peek() in _DIGITS or (data.peek() == "." and point < 0)):
        if data.peek() == ".":
            if data.pos - start > 12:
                raise SFError("a decimal has at most 12 integer digits")
            point = data.pos
        data.pos += 1
        if data.pos - start > (15 if point < 0 else 16):
            raise SFError("too many digits")
    digits = data.text[start : data.pos]
    if not digits or digits[0] == ".":
        raise SFError("a number starts with a digit")
    if point < 0:
        return sign * int(digits)
    if digits.endswith(".") or len(digits) - (point - start) - 1 > 3:
        raise SFError("a decimal has one to three fractional digits")
    return sign * float(digits)


def _string(data: _Input) -> str:
    data.expect('"')
    out: list[str] = []
    while True:
        char = data.take()
        if char == "\\":
            char = data.take()
            if char not in ('"', "\\"):
                raise SFError('only \\ and " are escaped in a string')
        elif char == '"':
            return "".join(out)
        elif not " " <= char <= "~":
            raise SFError("a string holds printable ASCII only")
        out.append(char)


def _token(data: _Input) -> Token:
    start = data.pos
    data.pos += 1
    while data.peek() and data.peek() in _TOKEN:
        data.pos += 1
    return Token(data.text[start : data.pos])


def _bytes(data: _Input) -> bytes:
    data.expect(":")
    end = data.text.find(":", data.pos)
    if end < 0:
        raise SFError("a byte sequence ends with ':'")
    encoded = data.text[data.pos : end]
    data.pos = end + 1
    if not set(encoded) <= _BASE64:
        raise SFError("a byte sequence is base64")
    try:  # padding may be missing (§4.2.7: parsers SHOULD NOT fail on it)
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SFError("a byte sequence is base64") from None


def _display_string(data: _Input) -> DisplayString:
    data.expect("%")
    data.expect('"')
    out = bytearray()
    while True:
        char = data.take()
        if char == "%":
            octet = data.take() + data.take()
            if not set(octet) <= _HEX:
                raise SFError("a display string escapes bytes as %xx in lowercase hex")
            out.append(int(octet, 16))
        elif char == '"':
            try:
                return DisplayString(out.decode("utf-8"))
            except UnicodeDecodeError:
                raise SFError("a display string is UTF-8") from None
        elif not " " <= char <= "~":
            raise SFError("a display string holds printable ASCII only")
        else:
            out += char.encode("ascii")
