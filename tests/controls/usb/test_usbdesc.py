"""The pure parts of USB control: descriptor parsing, recognition and rule evaluation."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floorguard.agent.controls.usb.rules import (
    DescriptorError,
    Identity,
    UsbRules,
    compile_pattern,
    evaluate,
    parse_descriptors,
    recognize,
)
from floorguard.policy import UsbSettings, parse_policy
from tests.rigs.usb_devices import DEVICES

BASELINE = """
[usb]
mode = "enforce"
allow = ["03:*:*", "09:*:*", "01:*:*"]
block = ["08:*:*", "06:*:*", "02:*:*", "0a:*:*", "e0:*:*", "ef:04:*", "ff:*:*"]
default = "block"
new_keyboard = "warn"
"""


def rules(text: str = BASELINE) -> UsbRules:
    return UsbRules.from_settings(parse_policy(text).settings(UsbSettings))


def desc(name: str):  # type: ignore[no-untyped-def]
    return parse_descriptors(bytes.fromhex(DEVICES[name].descriptors))


def ident(name: str, port: str = "1-1") -> Identity:
    d = DEVICES[name]
    return Identity(int(d.vendor, 16), int(d.product, 16), d.serial, port)


# --- parser --------------------------------------------------------------------------------


def test_parser_reads_every_configuration_and_alternate_setting() -> None:
    iphone = desc("iphone")
    assert iphone.device.vendor == 0x05AC and iphone.device.product == 0x12A8
    assert [c.value for c in iphone.configurations] == [1, 2, 3, 4]
    assert {i.triple for i in iphone.interfaces} >= {"06:01:01", "ff:fe:02", "ff:fd:01"}
    headset = desc("headset")
    alts = [(i.number, i.alternate) for i in headset.interfaces]
    assert alts == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0)]


def test_parser_links_interfaces_to_their_association() -> None:
    rndis = desc("android_rndis")
    control, data, adb = rndis.interfaces
    assert control.function is not None and control.function.cls == 0xE0
    assert data.function is control.function
    assert adb.function is None
    assert [e.transfer for e in data.endpoints] == ["bulk", "bulk"]


def test_truncated_descriptors_raise_a_clear_error() -> None:
    with pytest.raises(DescriptorError, match="claims 32 bytes but only 23 are present"):
        desc("truncated")


@pytest.mark.parametrize(("data", "message"), [
    (b"", "truncated device descriptor: 0 of 18 bytes"),
    (b"\x12\x02" + bytes(16), "expected the device descriptor"),
    (b"\x10\x01" + bytes(16), "must be 18 bytes long"),
    (bytes.fromhex("120100020000004081076755000101020300"), "announces no configuration"),
    (bytes.fromhex("120100020000004081076755000101020301"), "no configuration descriptor"),
    (bytes.fromhex("120100020000004081076755000101020302"
                   "0902200001010080640904000002080650000705810200020007050202000200"),
     "announces 2 configuration"),
], ids=["empty", "wrong-type", "wrong-length", "no-config-announced", "no-config",
        "config-missing"])
def test_malformed_descriptors_are_named(data: bytes, message: str) -> None:
    with pytest.raises(DescriptorError, match=message):
        parse_descriptors(data)


def test_a_zero_length_descriptor_cannot_loop_the_parser() -> None:
    good = bytes.fromhex(DEVICES["flash_drive"].descriptors)
    bad = good[:27] + b"\x00" + good[28:]  # the interface descriptor's bLength
    with pytest.raises(DescriptorError, match="has length 0"):
        parse_descriptors(bad)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        parsed = parse_descriptors(data)
    except DescriptorError as exc:
        assert str(exc)
    else:
        assert parsed.configurations


@settings(max_examples=400)
@given(st.sampled_from(sorted(DEVICES)), st.data())
def test_mutated_real_descriptors_parse_or_fail_cleanly(name: str, data: st.DataObject) -> None:
    raw = bytearray.fromhex(DEVICES[name].descriptors)
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)),
                                         st.integers(0, 255)), max_size=4))
    for pos, value in flips:
        if pos < len(raw):
            raw[pos] = value
    try:
        parse_descriptors(bytes(raw[:cut]))
    except DescriptorError as exc:
        assert str(exc)


# --- recognition ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "functions"), [
    ("flash_drive", "storage", {"storage"}),
    ("headset", "audio", {"audio", "hid"}),
    ("headset_storage", "storage", {"audio", "hid", "storage"}),
    ("android_mtp", "phone", {"phone"}),
    ("android_rndis", "network", {"network", "rndis", "phone"}),
    ("iphone", "phone", {"phone", "audio", "hid"}),
    ("usb_ethernet", "network", {"network"}),
    ("keyboard", "hid", {"hid", "keyboard"}),
    ("receiver", "hid", {"hid", "keyboard", "mouse"}),
    ("hub", "hub", {"hub"}),
    ("hub_drive", "storage", {"storage"}),
])
def test_recognition(name: str, kind: str, functions: set[str]) -> None:
    r = recognize(desc(name))
    assert r.kind == kind
    assert set(r.functions) == functions


def test_a_vendor_interface_named_mtp_is_a_phone() -> None:
    eth = desc("usb_ethernet")
    assert "phone" not in recognize(eth).functions
    assert "phone" in recognize(eth, {(1, 0): "MTP"}).functions


# --- evaluation ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "verdict", "rule"), [
    ("flash_drive", "blocked", "usb.block[08:*:*]"),
    ("headset", "allowed", "usb.allow[01:*:*]"),
    ("headset_storage", "partial", "usb.block[08:*:*]"),
    ("android_mtp", "blocked", "usb.block[ff:*:*]"),
    ("android_rndis", "blocked", "usb.block[e0:*:*]"),
    ("iphone", "blocked", "usb.block[06:*:*]"),
    ("usb_ethernet", "blocked", "usb.block[ff:*:*]"),
    ("keyboard", "allowed", "usb.allow[03:*:*]"),
    ("hub", "allowed", "usb.allow[09:*:*]"),
])
def test_baseline_verdicts(name: str, verdict: str, rule: str) -> None:
    d = evaluate(rules(), ident(name), desc(name), recognition=recognize(desc(name)))
    assert (d.verdict, d.rule) == (verdict, rule)


def test_a_phone_with_an_allowed_configuration_is_still_blocked_whole() -> None:
    iphone = desc("iphone")
    assert evaluate(rules(), ident("iphone"), iphone).verdict == "partial"
    d = evaluate(rules(), ident("iphone"), iphone, recognition=recognize(iphone))
    assert d.verdict == "blocked" and "phone device" in d.reason


def test_partial_names_each_interface_and_its_rule() -> None:
    d = evaluate(rules(), ident("headset_storage"), desc("headset_storage"))
    assert [(i.number, i.verdict, i.rule) for i in d.interfaces] == [
        (0, "allow", "usb.allow[01:*:*]"), (1, "allow", "usb.allow[01:*:*]"),
        (2, "allow", "usb.allow[01:*:*]"), (3, "allow", "usb.allow[03:*:*]"),
        (4, "block", "usb.block[08:*:*]")]
    assert d.allowed_interfaces == {(1, 0), (1, 1), (1, 2), (1, 3)}


def test_block_wins_over_allow_and_default_decides_the_rest() -> None:
    r = rules('[usb]\nallow = ["08:06:*"]\nblock = ["08:*:50"]\ndefault = "allow"\n')
    assert evaluate(r, ident("flash_drive"), desc("flash_drive")).rule == "usb.block[08:*:50]"
    d = evaluate(r, ident("hub"), desc("hub"))
    assert (d.verdict, d.rule) == ("allowed", "default")


def test_device_rules_by_vendor_product_serial_and_port() -> None:
    text = BASELINE + """
[[usb.device]]
id = "0781:5567"
verdict = "block"
[[usb.device]]
id = "0781:5567:4C530001230315112345"
verdict = "allow"
note = "the SV's approved stick"
[[usb.device]]
id = "0951:1666"
verdict = "allow"
port = "1-2.1"
"""
    r = rules(text)
    mine = evaluate(r, ident("flash_drive"), desc("flash_drive"))
    assert (mine.verdict, mine.rule) == ("allowed", "usb.device[0781:5567:4C530001230315112345]")
    other = Identity(0x0781, 0x5567, "SOMEONEELSE", "1-1")
    d = evaluate(r, other, desc("flash_drive"))
    assert (d.verdict, d.rule) == ("blocked", "usb.device[0781:5567]")
    at_port = evaluate(r, ident("hub_drive", "1-2.1"), desc("hub_drive"))
    assert (at_port.verdict, at_port.rule) == ("allowed", "usb.device[0951:1666@1-2.1]")
    moved = evaluate(r, ident("hub_drive", "1-3"), desc("hub_drive"))
    assert (moved.verdict, moved.rule) == ("blocked", "usb.block[08:*:*]")


def test_new_keyboard_warns_or_blocks() -> None:
    warn = evaluate(rules(), ident("receiver"), desc("receiver"), keyboard_present=True)
    assert warn.verdict == "allowed" and warn.new_keyboard
    assert not evaluate(rules(), ident("receiver"), desc("receiver")).new_keyboard
    block = evaluate(rules(BASELINE.replace('"warn"', '"block"')), ident("receiver"),
                     desc("receiver"), keyboard_present=True)
    assert (block.verdict, block.rule) == ("blocked", "usb.new_keyboard")
    mouse_only = evaluate(rules(BASELINE.replace('"warn"', '"block"')), ident("headset"),
                          desc("headset"), keyboard_present=True)
    assert mouse_only.verdict == "allowed"


def test_a_device_without_interfaces_takes_the_default() -> None:
    raw = bytes.fromhex("120100020000004081076755000101020301") + struct.pack(
        "<BBHBBBBB", 9, 2, 9, 0, 1, 0, 0x80, 50)
    d = evaluate(rules(), Identity(0x0781, 0x5567), parse_descriptors(raw))
    assert (d.verdict, d.rule) == ("blocked", "default")


_PART = st.one_of(st.just("*"), st.integers(0, 255).map(lambda v: f"{v:02x}"),
                  st.text(max_size=3))


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=12), st.tuples(_PART, _PART, _PART).map(":".join)),
       st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_random_patterns_never_crash_matching(text: str, c: int, s: int, p: int) -> None:
    try:
        pattern = compile_pattern(text)
    except ValueError as exc:
        assert "pattern" in str(exc)
        return
    assert pattern.matches(c, s, p) in (True, False)
    if pattern.cls is not None and pattern.cls != c:
        assert not pattern.matches(c, s, p)
