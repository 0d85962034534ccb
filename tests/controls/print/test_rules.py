"""The pure parts of print approval: the IPP codec and the policy decisions."""

from __future__ import annotations

import struct

import pytest

from floorguard.agent.adapters import cups
from floorguard.agent.adapters.cups import IppError, decode_response, encode_request, job_from_attrs
from floorguard.agent.controls.print.rules import (
    auto_release,
    cupsd_policy_problems,
    expired,
    holds,
    needs_note,
    parse_pdfinfo_pages,
    postscript_pages,
    queue_selected,
    text_pages,
)
from floorguard.policy import PrintSettings
from tests.rigs.cupsd import SECURE_POLICY, STOCK_POLICY


def response(groups: bytes, status: int = 0, rid: int = 7) -> bytes:
    return struct.pack(">BBHI", 2, 0, status, rid) + groups + b"\x03"


def attr(tag: int, name: str, value: bytes) -> bytes:
    return struct.pack(">BH", tag, len(name)) + name.encode() + struct.pack(">H", len(value)) \
        + value


def test_a_request_encodes_sets_with_empty_names_for_extra_values() -> None:
    data = encode_request(cups.GET_JOBS, 5, [(cups.OPERATION_GROUP, [
        ("requested-attributes", cups.KEYWORD, ["job-id", "job-name"])])])
    assert data[:8] == struct.pack(">BBHI", 2, 0, cups.GET_JOBS, 5)
    body = data[8:]
    assert body[0] == cups.OPERATION_GROUP
    assert attr(cups.KEYWORD, "requested-attributes", b"job-id") in body
    assert attr(cups.KEYWORD, "", b"job-name") in body
    assert body[-1] == cups.END_OF_ATTRIBUTES


def test_a_response_decodes_groups_sets_collections_and_trailing_data() -> None:
    coll = (attr(cups.BEG_COLLECTION, "media-col", b"")
            + attr(cups.MEMBER_NAME, "", b"media-size")
            + attr(cups.INTEGER, "", struct.pack(">i", 21000))
            + attr(cups.END_COLLECTION, "", b""))
    raw = response(bytes([cups.OPERATION_GROUP])
                   + attr(cups.CHARSET, "attributes-charset", b"utf-8")
                   + bytes([cups.JOB_GROUP])
                   + attr(cups.INTEGER, "job-id", struct.pack(">i", 12))
                   + attr(cups.KEYWORD, "job-state-reasons", b"job-hold-until-specified")
                   + attr(cups.KEYWORD, "", b"job-incoming")
                   + attr(cups.BOOLEAN, "flag", b"\x01")
                   + coll) + b"%PDF-1.7"
    resp = decode_response(raw)
    job = resp.of(cups.JOB_GROUP)[0]
    assert job["job-id"] == 12
    assert job["job-state-reasons"] == ["job-hold-until-specified", "job-incoming"]
    assert job["flag"] is True
    assert job["media-col"] == {"media-size": 21000}
    assert resp.data == b"%PDF-1.7"


@pytest.mark.parametrize(("raw", "says"), [
    (b"\x02\x00\x00", "truncated"),
    (struct.pack(">BBHI", 9, 0, 0, 1) + b"\x03", "version 9"),
    (response(bytes([cups.JOB_GROUP]) + attr(cups.INTEGER, "job-id", b"\x00\x01")),
     "integer 'job-id' has 2 bytes"),
    (response(bytes([cups.JOB_GROUP]) + attr(cups.KEYWORD, "", b"x")),
     "additional value without an attribute"),
    (response(attr(cups.KEYWORD, "x", b"y")), "before any group"),
    (response(bytes([cups.JOB_GROUP]) + attr(cups.TEXT, "job-name", b"\xff\xfe")),
     "not UTF-8"),
    (struct.pack(">BBHI", 2, 0, 0, 1) + bytes([cups.JOB_GROUP])
     + attr(cups.TEXT, "job-name", b"abc")[:-1], "truncated"),
])
def test_malformed_responses_raise_a_clear_error(raw: bytes, says: str) -> None:
    with pytest.raises(IppError, match="malformed IPP response") as err:
        decode_response(raw)
    assert says in str(err.value)


def test_a_job_group_without_a_valid_state_is_refused() -> None:
    with pytest.raises(IppError, match="job-id"):
        job_from_attrs({"job-state": 4})
    with pytest.raises(IppError, match="unknown job-state 42"):
        job_from_attrs({"job-id": 3, "job-state": 42})
    with pytest.raises(IppError, match="not an integer"):
        job_from_attrs({"job-id": "3", "job-state": 4})
    job = job_from_attrs({"job-id": 3, "job-state": 4, "job-printer-uri":
                          "ipp://localhost/printers/floor1", "job-name": "T"})
    assert (job.printer, job.held, job.title, job.user) == ("floor1", True, "T", "")


def test_queue_selection_by_globs_and_exemptions() -> None:
    assert queue_selected("floor1", ["*"], [])
    assert not queue_selected("floor1", ["*"], ["floor*"])
    assert queue_selected("floor1", ["floor?"], ["floor2"])
    assert not queue_selected("lobby", ["floor*"], [])


def test_the_note_rule_and_automatic_release() -> None:
    assert not needs_note(50, None)
    assert not needs_note(20, 20)
    assert needs_note(21, 20)
    assert needs_note(None, 20)  # unknown length might be above the limit
    off = PrintSettings("off", ("*",), (), 60.0, 2, 1.0)
    assert auto_release(off, 2) and not auto_release(off, 3) and not auto_release(off, None)
    required = PrintSettings("required", ("*",), (), 60.0, 2, 1.0)
    assert not auto_release(required, 1)
    assert holds(required) and holds(off)
    assert not holds(PrintSettings("off", ("*",), (), 60.0, None, 1.0))


def test_expiry_is_measured_from_when_the_job_was_seen() -> None:
    assert not expired(100.0, 159.9, 60.0)
    assert expired(100.0, 160.0, 60.0)


def test_page_counts_from_documents() -> None:
    assert text_pages(b"") == 1
    assert text_pages(b"a\n" * 60) == 1
    assert text_pages(b"a\n" * 61) == 2
    assert text_pages(b"one\fand two") == 2
    assert postscript_pages(b"%!PS-Adobe-3.0\n%%Pages: 4\n") == 4
    assert postscript_pages(b"%!PS\n") is None
    assert parse_pdfinfo_pages("Title: x\nPages:           12\n") == 12
    with pytest.raises(ValueError):
        parse_pdfinfo_pages("Syntax Error")


def test_the_shipped_cupsd_policy_keeps_operators_out() -> None:
    assert cupsd_policy_problems(SECURE_POLICY) == []


def test_the_stock_cupsd_policy_lets_owners_release_and_cancel() -> None:
    problems = cupsd_policy_problems(STOCK_POLICY)
    assert [p.split(":")[0] for p in problems] == ["Release-Job", "Set-Job-Attributes",
                                                   "Cancel-Job"]
    with_auth = STOCK_POLICY.replace("Require user @OWNER", "AuthType Default\n"
                                     "    Require user @OWNER")
    assert all("@OWNER" in p for p in cupsd_policy_problems(with_auth))


def test_a_limit_without_authtype_trusts_the_claimed_user() -> None:
    text = ("<Policy default>\n<Limit Release-Job Set-Job-Attributes Cancel-Job>\n"
            "Require user @SYSTEM\n</Limit>\n</Policy>\n")
    problems = cupsd_policy_problems(text)
    assert len(problems) == 3 and all("no AuthType" in p for p in problems)
    assert "no <Policy office>" in cupsd_policy_problems(text, "office")[0]
    valid = text.replace("Require user @SYSTEM", "AuthType Basic\nRequire valid-user")
    assert all("any authenticated user" in p for p in cupsd_policy_problems(valid))
