"""Bytes from the OS, recorded losslessly as valid UTF-8 text.

File names, command lines, user names, print titles and USB strings are bytes to the
kernel. Python hands them over as ``str`` carrying lone surrogates (``os`` and ``psutil``
decode with ``surrogateescape``; pyudev likewise), which cannot be written as UTF-8, so an
event holding one could not be hashed or stored. ``escape`` turns such a value into text
that can:

- valid UTF-8 text stays as it is;
- every byte that is not part of valid UTF-8, and every C0 control (0x00-0x1f) and DEL
  (0x7f), becomes ``\\xNN`` (two lowercase hex digits);
- a literal backslash becomes ``\\\\``, so the escape is never ambiguous.

``unescape`` is its exact inverse: ``unescape(escape(b)) == b`` for any bytes ``b``, so the
exact bytes the OS gave can always be recovered from the record.
"""

from __future__ import annotations

import re
from typing import Any

# What must be escaped in text that is already valid: backslash, C0 controls and DEL,
# and the lone surrogates that surrogateescape decoding leaves for undecodable bytes.
_NEEDS = re.compile(r"[\\\x00-\x1f\x7f\ud800-\udfff]")
_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")


def _to_bytes(text: str) -> bytes:
    """The bytes an OS string stands for: U+DC80..U+DCFF are surrogateescape'd bytes;
    any other lone surrogate keeps its (invalid) UTF-8 form, so it too is escaped."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        pass
    out = bytearray()
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(o - 0xDC00)
        else:
            out += ch.encode("utf-8", "surrogatepass")
    return bytes(out)


def _sub(m: re.Match[str]) -> str:
    ch = m.group()
    if ch == "\\":
        return "\\\\"
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte, as surrogateescape decoding left it
        return f"\\x{o - 0xDC00:02x}"
    return f"\\x{o:02x}"


def escape(value: str | bytes) -> str:
    """OS text or bytes as valid UTF-8 text (see the module docstring)."""
    if isinstance(value, str):
        if _NEEDS.search(value) is None:
            return value  # the common case: nothing to do
        value = _to_bytes(value)
    # Decoding with surrogateescape maps each byte of invalid UTF-8 (including encoded
    # surrogates, which Python's UTF-8 codec refuses) to U+DC80..U+DCFF, one per byte.
    text = bytes(value).decode("utf-8", "surrogateescape")
    return _NEEDS.sub(_sub, text)


def unescape(text: str) -> bytes:
    """The exact bytes ``escape`` was given. Raises ValueError on text that ``escape``
    cannot have made (a backslash not starting ``\\\\`` or ``\\xNN``)."""
    out = bytearray()
    pos = 0
    for m in _ESCAPED.finditer(text):
        chunk = text[pos:m.start()]
        if "\\" in chunk:
            raise ValueError(f"stray backslash at {pos + chunk.index(chr(92))} in {text!r}")
        out += chunk.encode("utf-8")
        esc = m.group(1)
        out += b"\\" if esc == "\\" else bytes([int(esc[1:], 16)])
        pos = m.end()
    tail = text[pos:]
    if "\\" in tail:
        raise ValueError(f"stray backslash at {pos + tail.index(chr(92))} in {text!r}")
    out += tail.encode("utf-8")
    return bytes(out)


def escape_tree(value: Any) -> Any:
    """``value`` with every str and bytes in it escaped, dict keys included; lists, tuples
    and dicts are rebuilt, anything else is returned as it is."""
    if isinstance(value, str | bytes | bytearray):
        return escape(value)
    if isinstance(value, dict):
        return {(escape(k) if isinstance(k, str | bytes) else k): escape_tree(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_tree(v) for v in value]
    return value
