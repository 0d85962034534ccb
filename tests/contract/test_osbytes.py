"""The one escape for bytes from the OS: lossless, visible, always valid UTF-8."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floorguard.osbytes import escape, escape_tree, unescape

# Text that needs no escape: valid Unicode scalar values, no backslash, no C0/DEL.
plain_text = st.text(st.characters(blacklist_categories=("Cs",),
                                   blacklist_characters="\\\x7f"
                                   + "".join(map(chr, range(0x20)))))


@given(st.binary())
def test_any_bytes_round_trip(raw: bytes) -> None:
    text = escape(raw)
    assert unescape(text) == raw
    text.encode("utf-8")  # never raises: always valid UTF-8
    assert escape(unescape(text)) == text


@given(st.binary())
def test_an_os_string_escapes_like_its_bytes(raw: bytes) -> None:
    """What os/psutil hand over (surrogateescape'd str) records the same as the bytes."""
    assert escape(os.fsdecode(raw)) == escape(raw)


@given(st.text())
def test_any_python_string_becomes_valid_utf8(text: str) -> None:
    """Even lone surrogates that no OS decoding makes (from JSON, say) are recorded."""
    out = escape(text)
    out.encode("utf-8")
    assert escape(unescape(out)) == out


@given(plain_text)
def test_valid_text_without_backslash_or_controls_is_unchanged(text: str) -> None:
    assert escape(text) == text
    assert unescape(text) == text.encode("utf-8")


@pytest.mark.parametrize(("raw", "shown"), [
    (b"cust-\xff\xfe.txt", "cust-\\xff\\xfe.txt"),
    (b"a\\b", "a\\\\b"),
    (b"tab\there\n", "tab\\x09here\\x0a"),
    (b"del\x7f", "del\\x7f"),
    ("顧客リスト.csv".encode(), "顧客リスト.csv"),
    (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # an encoded surrogate is not valid UTF-8
    (b"\xe3\x81", "\\xe3\\x81"),  # a cut-off sequence
])
def test_examples(raw: bytes, shown: str) -> None:
    assert escape(raw) == shown
    assert escape(os.fsdecode(raw)) == shown
    assert unescape(shown) == raw


@pytest.mark.parametrize("bad", ["a\\", "a\\q", "\\x4", "\\xFF"])
def test_unescape_refuses_what_escape_cannot_make(bad: str) -> None:
    with pytest.raises(ValueError, match="stray backslash"):
        unescape(bad)


def test_tree_escapes_values_and_keys_at_any_depth() -> None:
    tree = {"path": "/media/x/\udcff", "argv": ["obs", b"--x\xff"],
            "nested": {"k\udcfe": ("a\\b", 3, None, True)}}
    assert escape_tree(tree) == {"path": "/media/x/\\xff", "argv": ["obs", "--x\\xff"],
                                 "nested": {"k\\xfe": ["a\\\\b", 3, None, True]}}
