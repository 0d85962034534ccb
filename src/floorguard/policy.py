"""The floor policy: strict TOML, one table per control.

A policy file is refused whole when anything in it is wrong: an unknown key, a value of
the wrong type, a duration or USB pattern that does not parse, or two settings that
contradict each other. Every problem is reported as ``FILE:LINE: message`` where LINE is
the line of the offending key (or table header), so that an admin can fix the file without
guessing. A policy may hold only some tables; a control whose table is absent does not run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

T = TypeVar("T")

__all__ = [
    "MAX_DEPTH",
    "MAX_TEXT",
    "EgressRule",
    "Locator",
    "Policy",
    "PolicyError",
    "Problem",
    "UsbDeviceRule",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "parse_usb_pattern",
    "read_policy_text",
    "read_toml",
    "usb_pattern_matches",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a policy file, located at a line."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PolicyError(Exception):
    """A policy that must not be applied; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _Bad(ValueError):
    """A value that does not convert; the message says what to write instead."""


# --- value converters --------------------------------------------------------------------

_DURATION = re.compile(r"\s*([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d)\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"250ms"``, ``"1d"`` -> seconds."""
    if not isinstance(text, str):
        raise _Bad(f"expected a duration string such as \"5m\", got {_describe(text)}")
    m = _DURATION.fullmatch(text)
    if not m:
        raise _Bad(f'bad duration "{text}": write a number and a unit ms, s, m, h or d, e.g. "5m"')
    seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds <= 0:
        raise _Bad(f'bad duration "{text}": it must be more than zero')
    return seconds


_USB_PART = re.compile(r"\*|[0-9a-fA-F]{2}")


def parse_usb_pattern(text: str) -> tuple[int | None, int | None, int | None]:
    """``"08:*:*"`` -> (0x08, None, None). ``*`` matches anything (as in USBGuard)."""
    if not isinstance(text, str):
        raise _Bad(f'expected a USB interface pattern such as "08:*:*", got {_describe(text)}')
    parts = text.split(":")
    if len(parts) != 3 or not all(_USB_PART.fullmatch(p) for p in parts):
        raise _Bad(
            f'bad USB interface pattern "{text}": write class:subclass:protocol as two hex '
            'digits or * each, e.g. "08:*:*" or "e0:01:03"'
        )
    cls, sub, proto = (None if p == "*" else int(p, 16) for p in parts)
    if cls is None and (sub is not None or proto is not None):
        raise _Bad(f'bad USB interface pattern "{text}": a wildcard class needs wildcard rest')
    return cls, sub, proto


def usb_pattern_matches(pattern: str, cls: int, sub: int, proto: int) -> bool:
    pc, ps, pp = parse_usb_pattern(pattern)
    return (
        (pc is None or pc == cls)
        and (ps is None or ps == sub)
        and (pp is None or pp == proto)
    )


_USB_ID = re.compile(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{4})(?::([\x21-\x7e]{1,126}))?")
_USB_PORT = re.compile(r"[0-9]{1,3}-[0-9]{1,3}(?:\.[0-9]{1,3}){0,6}")


def _describe(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {_describe(v)}")
    if not v.strip():
        raise _Bad("expected a non-empty string")
    return v


def _int(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            hint = " (remove the quotes)" if isinstance(v, str) and v.strip().isdigit() else ""
            raise _Bad(f"expected an integer, got {_describe(v)}{hint}")
        if v < minimum or (maximum is not None and v > maximum):
            top = f" and {maximum}" if maximum is not None else ""
            raise _Bad(f"expected an integer of at least {minimum}{top}, got {v}")
        return v

    return conv


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        hint = " (write true or false without quotes)" if isinstance(v, str) else ""
        raise _Bad(f"expected true or false, got {_describe(v)}{hint}")
    return v


def _choice(*allowed: str) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if v not in allowed:
            shown = f'"{v}"' if isinstance(v, str) else _describe(v)
            raise _Bad(f"expected one of {', '.join(allowed)}, got {shown}")
        return str(v)

    return conv


def _duration(v: Any) -> float:
    return parse_duration(v)


def _usb_pattern(v: Any) -> str:
    parse_usb_pattern(v)
    return str(v).lower()


def _abs_path(v: Any) -> str:
    s = _string(v)
    if not s.startswith("/"):
        raise _Bad(f'expected an absolute path, got "{s}"')
    return os.path.normpath(s)


def _glob(v: Any) -> str:
    s = _string(v)
    if "\x00" in s:
        raise _Bad("a pattern cannot hold a NUL byte")
    return s


def _abs_glob(v: Any) -> str:
    s = _glob(v)
    if not s.startswith("/"):
        raise _Bad(f'expected an absolute path or glob such as "/home/*/Downloads", got "{s}"')
    return s


def _name_glob(v: Any) -> str:
    s = _glob(v)
    if "/" in s:
        raise _Bad(f'"{s}" is matched against file names only: write a name pattern such '
                   'as "*.csv" without a folder')
    return s


def _sha256(v: Any) -> str:
    s = _string(v).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", s):
        raise _Bad(f'expected a SHA-256 as 64 hex digits, got "{v}"')
    return s


def _timezone(v: Any) -> str:
    s = _string(v)
    try:
        ZoneInfo(s)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _Bad(f'unknown time zone "{s}": use an IANA name such as "Asia/Tokyo"') from exc
    return s


def _usb_id(v: Any) -> str:
    s = _string(v)
    m = _USB_ID.fullmatch(s)
    if not m:
        raise _Bad(f'bad USB device id "{s}": write vendor:product in hex, e.g. "0b0e:24c8", '
                   'optionally followed by :serial (printable, no spaces)')
    vid, pid, serial = m.groups()
    return f"{vid.lower()}:{pid.lower()}" + (f":{serial}" if serial else "")


def _usb_port(v: Any) -> str:
    s = _string(v)
    if not _USB_PORT.fullmatch(s):
        raise _Bad(f'bad USB port "{s}": write the kernel port path, e.g. "1-2" or "3-1.4"')
    return s


def _network(v: Any) -> str:
    s = _string(v)
    try:
        return str(ipaddress.ip_network(s, strict=False))
    except ValueError as exc:
        raise _Bad(f'bad network "{s}": write an address or CIDR, e.g. "10.0.0.0/8"') from exc


def _port(v: Any) -> int:
    return _int(1, 65535)(v)


def _list(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def conv(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise _Bad(f"expected an array, got {_describe(v)}")
        return tuple(v)  # items are converted one by one so each error gets its line

    conv.item = item  # type: ignore[attr-defined]
    return conv


# --- the schema --------------------------------------------------------------------------


@dataclass(frozen=True)
class UsbDeviceRule:
    id: str
    verdict: str
    serial: str | None = None
    port: str | None = None
    note: str = ""
    line: int = 0

    @property
    def vendor(self) -> str:
        return self.id.split(":")[0]

    @property
    def product(self) -> str:
        return self.id.split(":")[1]

    @property
    def name(self) -> str:
        """How events name this rule: ``usb.device[0b0e:24c8]``."""
        extra = f":{self.serial}" if self.serial else ""
        at = f"@{self.port}" if self.port else ""
        return f"usb.device[{self.id}{extra}{at}]"


@dataclass(frozen=True)
class EgressRule:
    net: str
    ports: tuple[int, ...] = ()
    note: str = ""


# --- the tables: one declaration each -------------------------------------------------------
#
# Each policy table is one frozen dataclass: its fields are the table's keys, each field's
# default is the key's default, and ``setting`` names the converter that checks a value
# from the file. The parser's schema, the controls' settings and the generated reference
# all come from these declarations, so a default is written exactly once.

_REQUIRED: Any = None  # the placeholder default of a required key (the parser insists)


def setting(convert: Callable[[Any], Any], default: Any = None, *,
            required: bool = False) -> Any:
    """A policy key: ``convert`` checks and converts the file's value."""
    return field(default=_REQUIRED if required else default,
                 metadata={"convert": convert, "required": required})


def _rules(default: Any = ()) -> Any:
    """An array of tables (``[[usb.device]]``), turned into rule objects by the parser."""
    return field(default=default, metadata={"array": True})


@dataclass(frozen=True)
class FloorSettings:
    """``[floor]``: the floor's name, its SV ratio and its time zone."""

    name: str = setting(_string, "")
    max_operators_per_sv: int | None = setting(_int(1), None)
    timezone: str = setting(_timezone, "Asia/Tokyo")
    idle_unlocked_after: float = setting(_duration, 300.0)


@dataclass(frozen=True)
class AgentSettings:
    """``[agent]``: how the agent talks to the console."""

    heartbeat_interval: float = setting(_duration, 30.0)


@dataclass(frozen=True)
class UsbDeviceSettings:
    """``[[usb.device]]``: one device decided whole."""

    id: str = setting(_usb_id, required=True)
    verdict: str = setting(_choice("allow", "block"), required=True)
    port: str | None = setting(_usb_port, None)
    note: str = setting(_string, "")


@dataclass(frozen=True)
class UsbSettings:
    """``[usb]``: which interfaces are allowed, and what happens to the rest."""

    mode: str = setting(_choice("enforce", "audit"), "enforce")
    allow: tuple[str, ...] = setting(_list(_usb_pattern), ())
    block: tuple[str, ...] = setting(_list(_usb_pattern), ())
    default: str = setting(_choice("allow", "block"), "block")
    new_keyboard: str = setting(_choice("warn", "block", "allow"), "warn")
    notify: bool = setting(_bool, True)
    device: tuple[UsbDeviceRule, ...] = _rules()


@dataclass(frozen=True)
class IdleSettings:
    """``[idle]``: when an idle session is warned, locked and suspended."""

    warn_after: float | None = setting(_duration, None)
    lock_after: float = setting(_duration, required=True)
    verify_within: float = setting(_duration, 5.0)
    retry_every: float = setting(_duration, 10.0)
    suspend_after: float | None = setting(_duration, None)
    inhibitors: str = setting(_choice("ignore", "respect"), "ignore")
    stale_hint_after: float = setting(_duration, 3600.0)
    notify: bool = setting(_bool, True)


@dataclass(frozen=True)
class PrintSettings:
    """``[print]``: which queues are held, and for how long."""

    approval: str = setting(_choice("required", "off"), "required")
    queues: tuple[str, ...] = setting(_list(_glob), ("*",))
    exempt: tuple[str, ...] = setting(_list(_glob), ())
    expire_after: float = setting(_duration, 1800.0)
    note_above_pages: int | None = setting(_int(1), None)
    check_interval: float = setting(_duration, 2.0)


@dataclass(frozen=True)
class FilesSettings:
    """``[files]``: the ways out on the file system, and the folders watched."""

    removable: tuple[str, ...] = setting(_list(_abs_path), ())
    watch: tuple[str, ...] = setting(_list(_abs_glob), ())
    flag: tuple[str, ...] = setting(_list(_name_glob), ())
    approved_mounts: tuple[str, ...] = setting(_list(_abs_glob), ())
    hash_limit: int = setting(_int(0), 256 * 1024 * 1024)


@dataclass(frozen=True)
class ProcessesSettings:
    """``[processes]``: the programs the floor forbids."""

    forbid: tuple[str, ...] = setting(_list(_string), ())
    forbid_paths: tuple[str, ...] = setting(_list(_abs_glob), ())
    forbid_sha256: tuple[str, ...] = setting(_list(_sha256), ())
    action: str = setting(_choice("kill", "report"), "report")
    check_interval: float = setting(_duration, 1.0)
    full_check_interval: float = setting(_duration, 30.0)


@dataclass(frozen=True)
class EgressSettings:
    """``[[network.egress]]``: one allowed destination."""

    net: str = setting(_network, required=True)
    ports: tuple[int, ...] = setting(_list(_port), ())
    note: str = setting(_string, "")


@dataclass(frozen=True)
class NetworkSettings:
    """``[network]``: the interfaces a PC may have, and where it may connect."""

    interfaces: tuple[str, ...] = setting(_list(_glob), ("lo",))
    check_interval: float = setting(_duration, 5.0)
    egress: tuple[EgressRule, ...] = _rules()


# table name -> its declaration; a dotted name is an array of tables inside its parent
TABLES: dict[str, type] = {
    "floor": FloorSettings, "agent": AgentSettings,
    "usb": UsbSettings, "usb.device": UsbDeviceSettings,
    "idle": IdleSettings, "print": PrintSettings, "files": FilesSettings,
    "processes": ProcessesSettings,
    "network": NetworkSettings, "network.egress": EgressSettings,
}

# Keys renamed so that every control says check_interval for its reconcile pace: an old
# policy gets a message naming the new key instead of a bare "unknown key".
RENAMED = {("processes", "scan_interval"): "check_interval",
           ("processes", "full_scan_interval"): "full_check_interval"}


@dataclass(frozen=True)
class _Key:
    convert: Callable[[Any], Any]
    default: Any = None
    required: bool = False


_SCHEMA: dict[str, dict[str, _Key]] = {
    name: {f.name: _Key(f.metadata["convert"], f.default, f.metadata["required"])
           for f in fields(cls) if "convert" in f.metadata}
    for name, cls in TABLES.items()
}
_ARRAY_TABLES = {name.split(".")[0]: name.split(".")[1] for name in TABLES if "." in name}


# --- locating keys in the source text -----------------------------------------------------

_ONE_KEY = r"""(?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY_PART = re.compile(r'\s*(?:([A-Za-z0-9_\-]+)|"((?:[^"\\]|\\.)*)"|\'([^\']*)\')\s*')
_DOTTED = _ONE_KEY + r"(?:\s*\.\s*" + _ONE_KEY + ")*"
_HEADER = re.compile(r"^\s*(\[\[?)\s*(" + _DOTTED + r")\s*(\]\]?)\s*$")
_KEYLINE = re.compile(r"^\s*(" + _DOTTED + r")\s*=")


def _key_parts(dotted: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ("a", "b.c", "d")."""
    parts = []
    pos = 0
    while pos < len(dotted):
        m = _KEY_PART.match(dotted, pos)
        if not m:
            break
        parts.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
        if pos < len(dotted) and dotted[pos] == ".":
            pos += 1
    return tuple(parts)


def _mask(text: str) -> list[str]:
    """The text's lines with comments removed and the inside of every string blanked.

    Brackets, ``#`` and ``=`` inside strings then no longer confuse the line scanner, and
    positions still match the original lines. A line that begins inside a multi-line
    string is blanked whole.
    """
    out: list[str] = []
    quote = ""  # the open string's delimiter: ", ', """ or '''
    for raw in text.split("\n"):
        chars = list(raw)
        i = 0
        while i < len(raw):
            ch = raw[i]
            if quote:
                if quote in ('"', '"""') and ch == "\\":  # an escape: skip the next char
                    chars[i] = " "
                    if i + 1 < len(raw):
                        chars[i + 1] = " "
                    i += 2
                    continue
                if raw.startswith(quote, i):
                    i += len(quote)
                    quote = ""
                    continue
                chars[i] = " "
                i += 1
                continue
            if ch == "#":
                del chars[i:]
                break
            if ch in "\"'":
                triple = ch * 3
                quote = triple if raw.startswith(triple, i) else ch
                i += len(quote)
                continue
            i += 1
        if quote in ('"', "'"):
            quote = ""  # a one-line string cannot run on; tomllib reports the error
        out.append("".join(chars))
    return out


class Locator:
    """Maps a key path such as ("usb", "device", 1, "id") to its line in the file.

    tomllib keeps no positions, so this reads the text the way a person does: table
    headers open a section, ``key =`` lines belong to the open section, and a value
    (a multi-line array, say) runs until its brackets close.
    """

    def __init__(self, text: str):
        self.sections: dict[tuple[Any, ...], int] = {}
        self.keys: dict[tuple[Any, ...], int] = {}
        self.ends: dict[tuple[Any, ...], int] = {}  # last line of the key's value
        self.lines = text.split("\n")
        masked = _mask(text)
        counts: dict[tuple[str, ...], int] = {}
        current: tuple[Any, ...] = ()
        open_key: tuple[Any, ...] | None = None
        depth = 0  # inside a multi-line array or inline table
        for no, (raw, line) in enumerate(zip(self.lines, masked, strict=True), start=1):
            if depth == 0:
                h = _HEADER.match(line)
                if h:
                    parts: tuple[Any, ...] = _key_parts(raw[h.start(2):h.end(2)])
                    if h.group(1) == "[[":
                        idx = counts.get(parts, 0)
                        counts[parts] = idx + 1
                        parts = (*parts, idx)
                    current = parts
                    self.sections.setdefault(current, no)
                    open_key = None
                    continue
                k = _KEYLINE.match(line)
                if k:
                    open_key = (*current, *_key_parts(raw[k.start(1):k.end(1)]))
                    self.keys.setdefault(open_key, no)
            depth += line.count("[") + line.count("{") - line.count("]") - line.count("}")
            depth = max(depth, 0)
            if open_key is not None:
                self.ends[open_key] = no
                if depth == 0:
                    open_key = None

    def _first_under(self, prefix: tuple[Any, ...]) -> int | None:
        lines = [no for table in (self.keys, self.sections) for path, no in table.items()
                 if path[:len(prefix)] == prefix]
        return min(lines) if lines else None

    def line_of(self, path: tuple[Any, ...], item: Any = None) -> int:
        """The line of ``path``; with ``item``, the line of that item in the key's array."""
        for n in range(len(path), 0, -1):
            prefix = path[:n]
            if prefix in self.keys:
                start = self.keys[prefix]
                if item is not None and n == len(path):
                    found = self._item_line(start, self.ends.get(prefix, start), item)
                    if found:
                        return found
                return start
            if prefix in self.sections:
                return self.sections[prefix]
            if n == len(path):
                under = self._first_under(prefix)
                if under is not None:
                    return under
        return 1

    def _item_line(self, start: int, end: int, item: Any) -> int | None:
        if isinstance(item, str):
            needles = [f'"{item}"', f"'{item}'"]
            for no in range(start, end + 1):
                if any(n in self.lines[no - 1] for n in needles):
                    return no
            return None
        if isinstance(item, bool):
            token = "true" if item else "false"
        elif isinstance(item, int | float):
            token = str(item)
        else:
            return None
        pattern = re.compile(r"(?<![\w.])" + re.escape(token) + r"(?![\w.])")
        for no in range(start, end + 1):
            if pattern.search(self.lines[no - 1]):
                return no
        return None


# --- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A validated policy. ``tables`` holds the converted values per present table."""

    source: str
    hash: str
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    text: str = ""  # what was parsed: a process that needs the policy parses it again

    def has(self, table: str) -> bool:
        return table in self.tables

    def get(self, table: str) -> dict[str, Any]:
        """The table's values with defaults filled in; empty if the table is absent."""
        return self.tables.get(table, {})

    def settings(self, cls: type[T]) -> T:
        """The table declared by ``cls``, typed: its values, or its defaults when the
        table is absent (a required key then has no value: check ``has`` first)."""
        name = next(n for n, c in TABLES.items() if c is cls)
        return cls(**self.tables.get(name, {}))

    @property
    def floor_name(self) -> str:
        return str(self.get("floor").get("name", "")) or ""

    def summary(self) -> str:
        tables = ", ".join(t for t in self.tables) or "no tables"
        return f"{self.source}: valid ({tables}); sha256 {self.hash[:16]}"


def _convert_table(
    name: str,
    raw: dict[str, Any],
    path: tuple[Any, ...],
    loc: Locator,
    file: str,
    problems: list[Problem],
) -> dict[str, Any]:
    schema = _SCHEMA[name]
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if name in _ARRAY_TABLES and key == _ARRAY_TABLES[name]:
            continue
        spec = schema.get(key)
        if spec is None:
            renamed = RENAMED.get((name, key))
            if renamed:
                why = f"'{key}' in [{name}] is now called '{renamed}': rename it"
            else:
                known = ", ".join(sorted(k for k in schema))
                why = f"unknown key '{key}' in [{name}] (known keys: {known})"
            problems.append(Problem(file, loc.line_of((*path, key)), why))
            continue
        try:
            converted = spec.convert(value)
        except _Bad as exc:
            problems.append(Problem(file, loc.line_of((*path, key)), f"{name}.{key}: {exc}"))
            continue
        item = getattr(spec.convert, "item", None)
        if item is not None:
            items = []
            for v in converted:
                try:
                    items.append(item(v))
                except _Bad as exc:
                    problems.append(Problem(file, loc.line_of((*path, key), v),
                                            f"{name}.{key}: {exc}"))
            converted = tuple(items)
        out[key] = converted
    for key, spec in schema.items():
        if key not in out and key not in raw:
            if spec.required:
                problems.append(Problem(file, loc.line_of(path),
                                        f"[{name}] needs the key '{key}'"))
            else:
                out[key] = spec.default
    return out


# Far beyond any real policy or agent.toml (the deepest real nesting is an array in an
# inline table in an array of tables, 4 levels), and far below where tomllib's recursive
# descent runs out of stack (measured on Python 3.11: 400 nested inline tables, 500
# arrays, at the default recursion limit).
MAX_DEPTH = 32
MAX_TEXT = 1_048_576  # characters; the shipped policies are a few KB


def _too_deep(text: str) -> int | None:
    """The line where ``[`` and ``{`` outside strings and comments first nest deeper than
    MAX_DEPTH, or None. A cheap scan, so that a hostile file is refused with its line
    before tomllib recurses into it."""
    depth = 0
    for no, line in enumerate(_mask(text), start=1):
        for ch in line:
            if ch in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    return no
            elif ch in "]}":
                depth = max(depth - 1, 0)
    return None


def read_toml(text: str, source: str) -> dict[str, Any]:
    """``tomllib.loads`` for text from a person or the network: every way it can fail is a
    PolicyError with a located Problem, never another exception (the agent's config
    reader and the console's policy upload rely on that)."""
    if len(text) > MAX_TEXT:
        raise PolicyError([Problem(source, 1, f"the file is larger than {MAX_TEXT} "
                                              "characters: this is not a policy or config "
                                              "file; check that the right file is named")])
    deep = _too_deep(text)
    if deep is not None:
        raise PolicyError([Problem(source, deep, f"brackets or braces nested more than "
                                                 f"{MAX_DEPTH} deep: close the arrays and "
                                                 "inline tables opened on or before this "
                                                 "line")])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else 1
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise PolicyError([Problem(source, line, f"not valid TOML: {msg}")]) from None
    except RecursionError:  # the depth scan should have caught it; never a traceback
        raise PolicyError([Problem(source, 1, "nested too deeply to read: simplify the "
                                              "arrays and inline tables")]) from None


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy text; raise PolicyError listing every problem."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: text that came from bad bytes
        line = text[: exc.start].count("\n") + 1
        raise PolicyError([Problem(source, line, "not UTF-8 text; save the file as UTF-8")]) \
            from None
    raw = read_toml(text, source)
    loc = Locator(text)
    problems: list[Problem] = []
    tables: dict[str, dict[str, Any]] = {}
    top_level = [k for k in _SCHEMA if "." not in k]
    for name, value in raw.items():
        if name not in top_level:
            problems.append(Problem(source, loc.line_of((name,)),
                                    f"unknown table [{name}] (known: {', '.join(top_level)})"))
            continue
        if not isinstance(value, dict):
            problems.append(Problem(source, loc.line_of((name,)),
                                    f"'{name}' must be a table, written [{name}]"))
            continue
        tables[name] = _convert_table(name, value, (name,), loc, source, problems)
        sub = _ARRAY_TABLES.get(name)
        if sub and sub in value:
            entries = value[sub]
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                problems.append(Problem(source, loc.line_of((name, sub)),
                                        f"{name}.{sub} must be written as [[{name}.{sub}]] tables"))
                entries = []
            tables[name][sub] = tuple(
                _convert_table(f"{name}.{sub}", e, (name, sub, i), loc, source, problems)
                | {"line": loc.line_of((name, sub, i))}
                for i, e in enumerate(entries)
            )
        elif sub:
            tables[name][sub] = ()
    _cross_checks(tables, loc, source, problems)
    if problems:
        problems.sort(key=lambda p: p.line)
        raise PolicyError(problems)
    _finish(tables)
    digest = hashlib.sha256(data).hexdigest()
    return Policy(source=source, hash=digest, tables=tables, text=text)


def _cross_checks(
    tables: dict[str, dict[str, Any]], loc: Locator, file: str, problems: list[Problem]
) -> None:
    usb = tables.get("usb")
    if usb:
        both = set(usb.get("allow") or ()) & set(usb.get("block") or ())
        for pat in sorted(both):
            problems.append(Problem(file, loc.line_of(("usb", "block"), pat),
                                    f'usb: pattern "{pat}" is in both allow and block; '
                                    "keep it in one of them"))
        seen: dict[tuple[str, str | None], int] = {}
        for i, dev in enumerate(usb.get("device") or ()):
            if "id" not in dev:
                continue
            key = (dev["id"], dev.get("port"))
            line = loc.line_of(("usb", "device", i, "id"))
            if key in seen:
                problems.append(Problem(file, line,
                                        f'usb.device "{dev["id"]}" is listed twice (first at '
                                        f"line {seen[key]}); keep one entry"))
            seen.setdefault(key, line)
    idle = tables.get("idle")
    if idle and idle.get("lock_after") is not None:
        lock = idle["lock_after"]
        warn = idle.get("warn_after")
        if warn is not None and warn >= lock:
            problems.append(Problem(file, loc.line_of(("idle", "warn_after")),
                                    "idle.warn_after must be shorter than idle.lock_after"))
        sus = idle.get("suspend_after")
        if sus is not None and sus <= lock:
            problems.append(Problem(file, loc.line_of(("idle", "suspend_after")),
                                    "idle.suspend_after must be longer than idle.lock_after"))
    procs = tables.get("processes")
    if procs:
        for name in procs.get("forbid") or ():
            if "/" in name:
                problems.append(Problem(file, loc.line_of(("processes", "forbid"), name),
                                        f'processes.forbid takes program names; put "{name}" '
                                        "in forbid_paths instead"))


def _finish(tables: dict[str, dict[str, Any]]) -> None:
    """Turn checked entries into their rule objects."""
    usb = tables.get("usb")
    if usb:
        rules = []
        for dev in usb["device"]:
            vid_pid = ":".join(dev["id"].split(":")[:2])
            serial = dev["id"].split(":", 2)[2] if dev["id"].count(":") >= 2 else None
            rules.append(UsbDeviceRule(id=vid_pid, verdict=dev["verdict"], serial=serial,
                                       port=dev.get("port"), note=dev.get("note", ""),
                                       line=dev["line"]))
        usb["device"] = tuple(rules)
    net = tables.get("network")
    if net:
        net["egress"] = tuple(EgressRule(net=e["net"], ports=tuple(e.get("ports") or ()),
                                         note=e.get("note", "")) for e in net["egress"])


def read_policy_text(path: str | Path) -> str:
    """The policy file's text; PolicyError when it cannot be read or is not UTF-8."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise PolicyError([Problem(str(p), 0, f"cannot read the policy: {why}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PolicyError([Problem(str(p), line, "not UTF-8 text; save the file as UTF-8")]) \
            from None


def load_policy(path: str | Path) -> Policy:
    return parse_policy(read_policy_text(path), str(path))


def policy_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories to the ``*.toml`` files in them, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.glob("*.toml")))
        else:
            out.append(p)
    return out


def glob_match(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)
