"""The structured-field parser (onward.core.sfv) against the examples of RFC 9651 (and RFC 8941,
which it obsoletes), and the fields onward reads with it: a field that does not parse is
ignored whole, as §4.2 requires."""

from __future__ import annotations

import pytest

from onward.core import sfv
from onward.core.http import parse_digest_field, server_digests
from onward.core.sfv import Date, DisplayString, InnerList, Item, Token
from onward.core.upload import Limits, parse_boolean, parse_limits

# -- the RFC's examples, section by section -----------------------------------------------------


def test_lists_of_the_rfc() -> None:
    """§3.1: tokens; §3.1.1: inner lists, an empty one too; §3.1.2: parameters."""
    assert sfv.parse_list("sugar, tea, rum") == [
        Item(Token("sugar"), {}),
        Item(Token("tea"), {}),
        Item(Token("rum"), {}),
    ]
    assert sfv.parse_list('("foo" "bar"), ("baz"), ("bat" "one"), ()') == [
        InnerList([Item("foo", {}), Item("bar", {})], {}),
        InnerList([Item("baz", {})], {}),
        InnerList([Item("bat", {}), Item("one", {})], {}),
        InnerList([], {}),
    ]
    assert sfv.parse_list('("foo"; a=1;b=2);lvl=5, ("bar" "baz");lvl=1') == [
        InnerList([Item("foo", {"a": 1, "b": 2})], {"lvl": 5}),
        InnerList([Item("bar", {}), Item("baz", {})], {"lvl": 1}),
    ]
    assert sfv.parse_list('abc;a=1;b=2; cde_456, (ghi;jk=4 l);q="9";r=w') == [
        Item(Token("abc"), {"a": 1, "b": 2, "cde_456": True}),
        InnerList([Item(Token("ghi"), {"jk": 4}), Item(Token("l"), {})], {"q": "9", "r": Token("w")}),
    ]
    assert sfv.parse_list("") == []


def test_dictionaries_of_the_rfc() -> None:
    """§3.2: byte sequences, booleans without a value, parameters, inner lists."""
    assert sfv.parse_dictionary('en="Applepie", da=:w4ZibGV0w6ZydGUK:') == {
        "en": Item("Applepie", {}),
        "da": Item("\u00c6blet\u00e6rte\n".encode(), {}),
    }
    assert sfv.parse_dictionary("a=?0, b, c; foo=bar") == {
        "a": Item(False, {}),
        "b": Item(True, {}),
        "c": Item(True, {"foo": Token("bar")}),
    }
    assert sfv.parse_dictionary("rating=1.5, feelings=(joy sadness)") == {
        "rating": Item(1.5, {}),
        "feelings": InnerList([Item(Token("joy"), {}), Item(Token("sadness"), {})], {}),
    }
    assert sfv.parse_dictionary("a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid") == {
        "a": InnerList([Item(1, {}), Item(2, {})], {}),
        "b": Item(3, {}),
        "c": Item(4, {"aa": Token("bb")}),
        "d": InnerList([Item(5, {}), Item(6, {})], {"valid": True}),
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5; foo=bar", 5),  # §3.3
        ("42", 42),  # §3.3.1
        ("-999999999999999", -999999999999999),
        ("4.5", 4.5),  # §3.3.2
        ('"hello world"', "hello world"),  # §3.3.3
        ('"say \\"hi\\" \\\\ now"', 'say "hi" \\ now'),
        ("foo123/456", Token("foo123/456")),  # §3.3.4
        (":cHJldGVuZCB0aGlzIGlzIGJpbmFyeSBjb250ZW50Lg==:", b"pretend this is binary content."),  # §3.3.5
        ("?1", True),  # §3.3.6
        ('%"... to %c3%bcsers."', DisplayString("... to \u00fcsers.")),  # RFC 9651 §3.3.8
        ("@1659578233", Date(1659578233)),  # RFC 9651 §3.3.7
        ("  42  ", 42),  # surrounding spaces are dropped (§4.2)
        (":aGVsbG8:", b"hello"),  # missing padding: parsers SHOULD NOT fail (§4.2.7)
    ],
)
def test_items_of_the_rfc(text: str, value: object) -> None:
    parsed = sfv.parse_item(text).value
    assert parsed == value and type(parsed) is type(value)


def test_display_strings_and_dates_keep_their_types() -> None:
    assert isinstance(sfv.parse_item('%"caf%c3%a9"').value, DisplayString)
    assert isinstance(sfv.parse_item("@0").value, Date)


@pytest.mark.parametrize(
    "text",
    [
        "1234567890123456",  # 16 digits: an Integer has at most 15
        "1234567890123.0",  # 13 integer digits in a Decimal
        "1.2345",  # more than 3 fractional digits
        "1.",
        "-",
        "?2",
        '"unterminated',
        '"bad \\escape"',
        '"tab\there"',
        ":not base64!:",
        ":aGVsbG8",
        "@1.5",  # a Date is an Integer
        '%"%C3%BC"',  # upper-case hex in a Display String
        '%"%ff"',  # not UTF-8
        "a b",  # more after the item
        "\u00e9",  # not ASCII
        "",
    ],
)
def test_malformed_items_fail_whole(text: str) -> None:
    with pytest.raises(sfv.SFError):
        sfv.parse_item(text)


@pytest.mark.parametrize("text", ["a, ", "a,,b", "(1 2", "(1,2)", "a b"])
def test_malformed_lists_fail_whole(text: str) -> None:
    with pytest.raises(sfv.SFError):
        sfv.parse_list(text)


@pytest.mark.parametrize("text", ["A=1", "a=1,", "a=1 b=2", "1a=2", "a=(1 2"])
def test_malformed_dictionaries_fail_whole(text: str) -> None:
    with pytest.raises(sfv.SFError):
        sfv.parse_dictionary(text)


def test_a_repeated_dictionary_key_keeps_its_last_value() -> None:
    assert sfv.parse_dictionary("a=1, b=2, a=3") == {"a": Item(3, {}), "b": Item(2, {})}


def test_item_value_wants_the_type_asked_for() -> None:
    """A Boolean is not an Integer here (Python's bool is an int), and a field that does not
    parse reads as absent."""
    assert sfv.item_value("?1", bool) is True
    assert sfv.item_value("?1", int) is None
    assert sfv.item_value("1", bool) is None
    assert sfv.item_value("7;x=1", int) == 7
    assert sfv.item_value("7 8", int) is None
    assert sfv.item_value(None, int) is None


# -- the fields onward reads with it ------------------------------------------------------------


def test_upload_fields_of_the_draft() -> None:
    assert parse_boolean("?1") is True and parse_boolean(" ?0 ") is False
    assert parse_boolean("1") is None and parse_boolean("?1, ?0") is None
    assert parse_limits("max-size=1000, max-append-size=100;x, future=(1 2)") == Limits(1000, 100)
    assert parse_limits("max-size=-1") == Limits()  # a known key with a bad value voids the field
    assert parse_limits("max-size=1000, ???") == Limits()  # so does a field that does not parse


def test_digest_fields_of_rfc_9530() -> None:
    """The strongest known algorithm wins; unknown algorithms and digests of the wrong length
    are passed over; a field that does not parse is ignored (the legacy Digest is not a
    Structured Field and keeps its own, case-insensitive rules)."""
    sha256 = bytes(range(32))
    sha512 = bytes(range(64))
    b64_256 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    b64_512 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
    assert parse_digest_field(f"sha-256=:{b64_256}:") == ("sha256", sha256)
    assert parse_digest_field(f"sha-256=:{b64_256}:, sha-512=:{b64_512}:") == ("sha512", sha512)
    assert parse_digest_field(f"unixsum=:AAA=:, sha-512=:{b64_256}:, sha-256=:{b64_256}:") == (
        "sha256",
        sha256,
    )
    assert parse_digest_field(f"sha-256={b64_256}") is None  # not a byte sequence
    assert parse_digest_field(f"SHA-256=:{b64_256}:") is None  # keys are lower-case
    assert [d.origin for d in server_digests(None, f"SHA-256={b64_256}")] == ["Digest"]
