"""A thin IPP adapter for CUPS: the handful of operations print approval needs.

It speaks IPP/2.0 (RFC 8010/8011) over HTTP to cupsd's Unix socket (or ``host:port``),
authenticating on the socket as the agent's own user with ``Authorization: PeerCred``.
Why not a library: pycups has no Release-Job and its Get-Jobs loses owner and title;
pyipp cannot authenticate on the socket and drops attributes CUPS adds. IPP's binary
form is small, so the codec is here, and everything that comes back from the OS is
validated: a malformed response raises ``IppError`` saying what is wrong, never a
half-read dict.
"""

from __future__ import annotations

import os
import pwd
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

DEFAULT_SOCKET = "/run/cups/cups.sock"

# Operations (RFC 8011 section 5.4, CUPS Implementation of IPP).
CANCEL_JOB = 0x0008
GET_JOB_ATTRIBUTES = 0x0009
GET_JOBS = 0x000A
GET_PRINTER_ATTRIBUTES = 0x000B
RELEASE_JOB = 0x000D
SET_JOB_ATTRIBUTES = 0x0014
CUPS_GET_PRINTERS = 0x4002
CUPS_ADD_MODIFY_PRINTER = 0x4003
CUPS_GET_DOCUMENT = 0x4027

# Delimiter tags.
OPERATION_GROUP = 0x01
JOB_GROUP = 0x02
END_OF_ATTRIBUTES = 0x03
PRINTER_GROUP = 0x04
UNSUPPORTED_GROUP = 0x05

# Value tags.
INTEGER = 0x21
BOOLEAN = 0x22
ENUM = 0x23
OCTET_STRING = 0x30
DATETIME = 0x31
RESOLUTION = 0x32
RANGE = 0x33
BEG_COLLECTION = 0x34
TEXT_LANG = 0x35
NAME_LANG = 0x36
END_COLLECTION = 0x37
TEXT = 0x41
NAME = 0x42
KEYWORD = 0x44
URI = 0x45
URI_SCHEME = 0x46
CHARSET = 0x47
LANGUAGE = 0x48
MIME = 0x49
MEMBER_NAME = 0x4A

_STRING_TAGS = {TEXT, NAME, KEYWORD, URI, URI_SCHEME, CHARSET, LANGUAGE, MIME, MEMBER_NAME,
                OCTET_STRING}
_OUT_OF_BAND = {0x10, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17}

# Job states (RFC 8011 section 5.3.7).
PENDING, HELD, PROCESSING, STOPPED, CANCELED, ABORTED, COMPLETED = 3, 4, 5, 6, 7, 8, 9
JOB_STATES = {3: "pending", 4: "pending-held", 5: "processing", 6: "processing-stopped",
              7: "canceled", 8: "aborted", 9: "completed"}

# Status codes we act on.
OK_MAX = 0x00FF
NOT_FOUND = 0x0406
NOT_POSSIBLE = 0x0404
GONE = 0x0407


class IppError(Exception):
    """cupsd is unreachable, refused an operation, or answered something unreadable."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class CupsUnreachable(IppError):
    """No cupsd answered (socket missing, connection refused, timeout)."""


@dataclass
class Response:
    status: int
    request_id: int
    groups: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    data: bytes = b""

    @property
    def operation(self) -> dict[str, Any]:
        for tag, attrs in self.groups:
            if tag == OPERATION_GROUP:
                return attrs
        return {}

    def of(self, group_tag: int) -> list[dict[str, Any]]:
        return [attrs for tag, attrs in self.groups if tag == group_tag]


# --- the codec ----------------------------------------------------------------------------

Value = tuple[int, Any]  # (value tag, python value)


def _encode_value(tag: int, value: Any) -> bytes:
    if tag in (INTEGER, ENUM):
        return struct.pack(">i", int(value))
    if tag == BOOLEAN:
        return b"\x01" if value else b"\x00"
    if tag in _STRING_TAGS:
        return value if isinstance(value, bytes) else str(value).encode("utf-8")
    if tag in _OUT_OF_BAND:
        return b""
    raise ValueError(f"cannot encode IPP value tag 0x{tag:02x}")


def encode_request(operation: int, request_id: int,
                   groups: Iterable[tuple[int, list[tuple[str, int, Any]]]],
                   data: bytes = b"") -> bytes:
    """An IPP/2.0 request. Each attribute is ``(name, tag, value)``; a list value becomes a
    1setOf (the extra values carry an empty name, as the encoding requires)."""
    out = bytearray(struct.pack(">BBHI", 2, 0, operation, request_id))
    for group_tag, attrs in groups:
        out.append(group_tag)
        for name, tag, value in attrs:
            values = value if isinstance(value, list) else [value]
            for i, v in enumerate(values):
                raw_name = name.encode("ascii") if i == 0 else b""
                raw = _encode_value(tag, v)
                out += struct.pack(">BH", tag, len(raw_name)) + raw_name
                out += struct.pack(">H", len(raw)) + raw
    out.append(END_OF_ATTRIBUTES)
    return bytes(out) + data


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise IppError(f"malformed IPP response: truncated in {what} at byte {self.pos} "
                           f"(wanted {n}, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(struct.unpack(">H", self.take(2, what))[0])


def _decode_value(tag: int, raw: bytes, name: str) -> Any:
    if tag in (INTEGER, ENUM):
        if len(raw) != 4:
            raise IppError(f"malformed IPP response: integer '{name}' has {len(raw)} bytes")
        return struct.unpack(">i", raw)[0]
    if tag == BOOLEAN:
        if len(raw) != 1:
            raise IppError(f"malformed IPP response: boolean '{name}' has {len(raw)} bytes")
        return raw != b"\x00"
    if tag == OCTET_STRING:
        return raw
    if tag in _STRING_TAGS:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise IppError(f"malformed IPP response: '{name}' is not UTF-8") from None
    if tag in (TEXT_LANG, NAME_LANG):
        # language length, language, text length, text
        if len(raw) < 4:
            raise IppError(f"malformed IPP response: '{name}' with language is too short")
        n = struct.unpack(">H", raw[:2])[0]
        rest = raw[2 + n:]
        if len(rest) < 2:
            raise IppError(f"malformed IPP response: '{name}' with language is cut short")
        m = struct.unpack(">H", rest[:2])[0]
        return rest[2:2 + m].decode("utf-8", "replace")
    if tag == DATETIME:
        return raw  # not needed here; kept raw
    if tag == RANGE and len(raw) == 8:
        return struct.unpack(">ii", raw)
    if tag == RESOLUTION and len(raw) == 9:
        return struct.unpack(">iib", raw)
    if tag in _OUT_OF_BAND:
        return None
    return raw  # an unknown tag is kept as bytes rather than guessed at


def _read_collection(r: _Reader, outer: str) -> dict[str, Any]:
    members: dict[str, Any] = {}
    member: str | None = None
    while True:
        tag = r.u8("a collection")
        name_len = r.u16("a collection member")
        r.take(name_len, "a collection member name")
        raw = r.take(r.u16("a collection value"), "a collection value")
        if tag == END_COLLECTION:
            return members
        if tag == MEMBER_NAME:
            member = raw.decode("utf-8", "replace")
            continue
        if member is None:
            raise IppError(f"malformed IPP response: collection '{outer}' has a value "
                           "before a member name")
        value = _read_collection(r, member) if tag == BEG_COLLECTION else \
            _decode_value(tag, raw, member)
        if member in members:
            prev = members[member]
            members[member] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            members[member] = value


def decode_response(data: bytes) -> Response:
    """Parse an IPP response; raises ``IppError`` naming the problem when it is malformed.
    Attributes that occur with several values become lists."""
    r = _Reader(data)
    major = r.u8("the version")
    r.u8("the version")
    if major not in (1, 2):
        raise IppError(f"malformed IPP response: version {major} is not IPP/1.x or 2.x")
    status = r.u16("the status code")
    request_id = int(struct.unpack(">I", r.take(4, "the request id"))[0])
    resp = Response(status=status, request_id=request_id)
    current: dict[str, Any] | None = None
    last: str | None = None
    while True:
        tag = r.u8("an attribute tag")
        if tag == END_OF_ATTRIBUTES:
            break
        if tag < 0x10:
            current = {}
            resp.groups.append((tag, current))
            last = None
            continue
        if current is None:
            raise IppError("malformed IPP response: an attribute before any group")
        name = r.take(r.u16("an attribute name length"), "an attribute name").decode(
            "utf-8", "replace")
        raw = r.take(r.u16("a value length"), "a value")
        if tag == BEG_COLLECTION:
            value = _read_collection(r, name or last or "?")
        else:
            value = _decode_value(tag, raw, name or last or "?")
        if name:
            current[name] = value
            last = name
        else:
            if last is None:
                raise IppError("malformed IPP response: an additional value without an "
                               "attribute")
            prev = current[last]
            current[last] = [*prev, value] if isinstance(prev, list) else [prev, value]
    resp.data = data[r.pos:]
    return resp


# --- the client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    id: int
    state: int
    reasons: tuple[str, ...]
    user: str
    title: str
    k_octets: int
    printer: str
    created: int
    origin_host: str = ""

    @property
    def held(self) -> bool:
        return self.state == HELD


@dataclass(frozen=True)
class Printer:
    name: str
    hold_default: str
    uri: str
    op_policy: str = ""


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, list) else v


def _as_int(attrs: dict[str, Any], name: str, default: int | None = None) -> int:
    v = _first(attrs.get(name, default))
    if isinstance(v, bool) or not isinstance(v, int):
        if default is not None and v is None:
            return default
        raise IppError(f"malformed IPP response: job attribute '{name}' is "
                       f"{type(v).__name__}, not an integer")
    return v


def _as_str(attrs: dict[str, Any], name: str) -> str:
    v = _first(attrs.get(name, ""))
    if v is None:
        return ""
    if not isinstance(v, str):
        raise IppError(f"malformed IPP response: attribute '{name}' is not text")
    return v


def job_from_attrs(attrs: dict[str, Any]) -> Job:
    """A ``Job`` from one job group, refusing groups without a usable id or state."""
    jid = _as_int(attrs, "job-id")
    if jid <= 0:
        raise IppError(f"malformed IPP response: job-id {jid} is not positive")
    state = _as_int(attrs, "job-state")
    if state not in JOB_STATES:
        raise IppError(f"malformed IPP response: job {jid} has unknown job-state {state}")
    reasons = attrs.get("job-state-reasons", [])
    reasons = reasons if isinstance(reasons, list) else [reasons]
    uri = _as_str(attrs, "job-printer-uri")
    return Job(id=jid, state=state, reasons=tuple(str(x) for x in reasons),
               user=_as_str(attrs, "job-originating-user-name"),
               title=_as_str(attrs, "job-name"),
               k_octets=_as_int(attrs, "job-k-octets", 0),
               printer=uri.rstrip("/").rsplit("/", 1)[-1] if uri else "",
               created=_as_int(attrs, "time-at-creation", 0),
               origin_host=_as_str(attrs, "job-originating-host-name"))


JOB_ATTRIBUTES = ["job-id", "job-state", "job-state-reasons", "job-originating-user-name",
                  "job-name", "job-k-octets", "job-printer-uri", "time-at-creation",
                  "job-originating-host-name"]


class Cups:
    """IPP client for one cupsd. ``server`` is a socket path or ``host[:port]``."""

    def __init__(self, server: str = "", *, user: str | None = None, timeout: float = 10.0):
        self.server = server or os.environ.get("CUPS_SERVER") or DEFAULT_SOCKET
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self._request_id = 0
        if self.server.startswith("/"):
            transport = httpx.HTTPTransport(uds=self.server)
            self.base = "http://localhost"
            self.local = True
        else:
            transport = httpx.HTTPTransport()
            host = self.server if ":" in self.server else f"{self.server}:631"
            self.base = f"http://{host}"
            self.local = False
        self._http = httpx.Client(transport=transport, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Cups({self.server!r})"

    # -- plumbing ------------------------------------------------------------------------

    def _uri(self, path: str) -> str:
        return f"ipp://localhost{path}"

    def call(self, operation: int, attrs: list[tuple[str, int, Any]], *, path: str = "/",
             groups: list[tuple[int, list[tuple[str, int, Any]]]] | None = None,
             ok: tuple[int, ...] = ()) -> Response:
        """Send one request; raises ``IppError`` unless the status is successful or in
        ``ok`` (callers that expect not-found say so)."""
        self._request_id = self._request_id % 0x7FFFFFFF + 1
        rid = self._request_id
        operation_attrs = [("attributes-charset", CHARSET, "utf-8"),
                           ("attributes-natural-language", LANGUAGE, "en"), *attrs,
                           ("requesting-user-name", NAME, self.user)]
        body = encode_request(operation, rid, [(OPERATION_GROUP, operation_attrs),
                                               *(groups or [])])
        headers = {"Content-Type": "application/ipp"}
        if self.local:
            headers["Authorization"] = f"PeerCred {self.user}"
        try:
            resp = self._http.post(self.base + path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise CupsUnreachable(f"cannot reach cupsd at {self.server}: {exc}") from exc
        if resp.status_code != 200:
            raise IppError(f"cupsd at {self.server} answered HTTP {resp.status_code} "
                           f"to operation 0x{operation:04x} (is this agent's user "
                           f"{self.user!r} in cupsd's SystemGroup?)", status=resp.status_code)
        if resp.headers.get("content-type", "").split(";")[0].strip() != "application/ipp":
            raise IppError(f"cupsd at {self.server} answered with content type "
                           f"{resp.headers.get('content-type')!r}, not application/ipp")
        parsed = decode_response(resp.content)
        if parsed.request_id != rid:
            raise IppError(f"malformed IPP response: request id {parsed.request_id}, "
                           f"expected {rid}")
        if parsed.status > OK_MAX and parsed.status not in ok:
            message = _as_str(parsed.operation, "status-message") or "no message"
            raise IppError(f"cupsd refused operation 0x{operation:04x}: status "
                           f"0x{parsed.status:04x} ({message})", status=parsed.status)
        return parsed

    def _job_target(self, job_id: int) -> list[tuple[str, int, Any]]:
        return [("job-uri", URI, self._uri(f"/jobs/{job_id}"))]

    # -- operations ------------------------------------------------------------------------

    def get_jobs(self, which: str = "not-completed", first_job_id: int | None = None
                 ) -> list[Job]:
        """Jobs of every queue; ``which="all"`` with ``first_job_id`` also lists those
        that finished since (CUPS extension), so nothing slips by between two looks."""
        attrs: list[tuple[str, int, Any]] = [
            ("printer-uri", URI, self._uri("/")), ("which-jobs", KEYWORD, which),
            ("requested-attributes", KEYWORD, JOB_ATTRIBUTES)]
        if first_job_id is not None:
            attrs.append(("first-job-id", INTEGER, first_job_id))
        resp = self.call(GET_JOBS, attrs)
        return [job_from_attrs(a) for a in resp.of(JOB_GROUP)]

    def get_job(self, job_id: int) -> Job | None:
        """The job, or None when cupsd no longer knows it."""
        resp = self.call(GET_JOB_ATTRIBUTES,
                         [*self._job_target(job_id),
                          ("requested-attributes", KEYWORD, JOB_ATTRIBUTES)],
                         ok=(NOT_FOUND,))
        if resp.status == NOT_FOUND:
            return None
        groups = resp.of(JOB_GROUP)
        if not groups:
            raise IppError(f"malformed IPP response: no job group for job {job_id}")
        return job_from_attrs(groups[0])

    def get_printers(self) -> list[Printer]:
        resp = self.call(CUPS_GET_PRINTERS, [
            ("requested-attributes", KEYWORD, ["printer-name", "job-hold-until-default",
                                               "printer-uri-supported", "printer-op-policy"])],
            ok=(NOT_FOUND,))  # not-found: no printers at all
        printers = []
        for a in resp.of(PRINTER_GROUP):
            name = _as_str(a, "printer-name")
            if not name:
                raise IppError("malformed IPP response: a printer without printer-name")
            printers.append(Printer(name=name,
                                    hold_default=_as_str(a, "job-hold-until-default"),
                                    uri=_as_str(a, "printer-uri-supported"),
                                    op_policy=_as_str(a, "printer-op-policy")))
        return printers

    def get_printer(self, name: str) -> Printer:
        resp = self.call(GET_PRINTER_ATTRIBUTES, [
            ("printer-uri", URI, self._uri(f"/printers/{name}")),
            ("requested-attributes", KEYWORD, ["printer-name", "job-hold-until-default",
                                               "printer-uri-supported", "printer-op-policy"])])
        groups = resp.of(PRINTER_GROUP)
        if not groups:
            raise IppError(f"malformed IPP response: no printer group for {name}")
        a = groups[0]
        return Printer(name=_as_str(a, "printer-name") or name,
                       hold_default=_as_str(a, "job-hold-until-default"),
                       uri=_as_str(a, "printer-uri-supported"),
                       op_policy=_as_str(a, "printer-op-policy"))

    def set_hold_default(self, printer: str, value: str = "indefinite") -> None:
        self.call(CUPS_ADD_MODIFY_PRINTER,
                  [("printer-uri", URI, self._uri(f"/printers/{printer}"))],
                  path="/admin/",
                  groups=[(PRINTER_GROUP, [("job-hold-until-default", KEYWORD, value)])])

    def release_job(self, job_id: int) -> Response:
        return self.call(RELEASE_JOB, self._job_target(job_id), path="/jobs/",
                         ok=(NOT_FOUND, NOT_POSSIBLE, GONE))

    def cancel_job(self, job_id: int) -> Response:
        return self.call(CANCEL_JOB, self._job_target(job_id), path="/jobs/",
                         ok=(NOT_FOUND, NOT_POSSIBLE, GONE))

    def get_document(self, job_id: int, number: int = 1) -> tuple[str, bytes]:
        """The job's document (format, bytes), as cupsd spooled it."""
        resp = self.call(CUPS_GET_DOCUMENT, [*self._job_target(job_id),
                                             ("document-number", INTEGER, number)])
        fmt = _as_str(resp.operation, "document-format")
        for attrs in resp.of(JOB_GROUP):  # cupsd puts it in a job group
            fmt = fmt or _as_str(attrs, "document-format")
        return fmt or "application/octet-stream", resp.data
