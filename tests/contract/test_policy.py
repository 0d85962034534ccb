"""The policy engine, proven against annotated corpora and through the real CLI.

Each file in ``tests/policies/bad`` says what must be wrong with it in its own comments:
``# expect: LINE: message`` (one line per problem; the message is a prefix of what
``floorguard check`` prints after ``FILE:LINE:``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floorguard.policy import (
    EgressRule,
    PolicyError,
    UsbDeviceRule,
    load_policy,
    parse_duration,
    parse_policy,
    parse_usb_pattern,
    usb_pattern_matches,
)
from tests.rigs.processes import REPO, floorguard

CORPUS = REPO / "tests" / "policies"
GOOD = sorted((CORPUS / "good").glob("*.toml"))
BAD = sorted((CORPUS / "bad").glob("*.toml"))
SHIPPED = sorted((REPO / "policies").glob("*.toml"))
EXPECT = re.compile(r"^# expect: (\d+): (.+)$")


def expectations(path: Path) -> list[tuple[int, str]]:
    # latin-1 never fails, so a file that is deliberately not UTF-8 still yields its header
    text = path.read_bytes().decode("latin-1")
    found = [(int(m.group(1)), m.group(2)) for line in text.splitlines()
             if (m := EXPECT.match(line))]
    assert found, f"{path.name} has no '# expect: LINE: message' comment"
    return found


def test_the_corpora_are_not_empty() -> None:
    assert len(GOOD) >= 5 and len(BAD) >= 18 and SHIPPED


@pytest.mark.parametrize("path", GOOD + SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_good_policy_is_valid(path: Path) -> None:
    policy = load_policy(path)
    assert len(policy.hash) == 64
    assert policy.tables, "a good policy enables at least one table"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_policy_fails_at_the_expected_line(path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    got = [(p.file, p.line, p.message) for p in err.value.problems]
    want = expectations(path)
    assert len(got) == len(want), f"problems: {got}"
    for (file, line, message), (want_line, want_msg) in zip(got, want, strict=True):
        assert file == str(path)
        assert (line, message[:len(want_msg)]) == (want_line, want_msg), got


def test_policy_with_only_usb_runs_only_usb() -> None:
    policy = load_policy(CORPUS / "good" / "only_usb.toml")
    assert sorted(policy.tables) == ["usb"]
    assert not policy.has("idle") and policy.get("idle") == {}
    usb = policy.get("usb")
    assert usb["mode"] == "enforce" and usb["default"] == "block"  # defaults filled in
    assert usb["device"] == ()


def test_devices_by_serial_and_port_become_rules() -> None:
    usb = load_policy(CORPUS / "good" / "usb_devices.toml").get("usb")
    by_serial, on_port, anywhere = usb["device"]
    assert by_serial == UsbDeviceRule(id="0781:5583", verdict="allow",
                                      serial="4C530001230412114554",
                                      note="SV's encrypted stick", line=7)
    assert (on_port.port, on_port.verdict, on_port.name) == (
        "1-4.2", "allow", "usb.device[0b0e:24c8@1-4.2]")
    assert (anywhere.port, anywhere.verdict, anywhere.vendor, anywhere.product) == (
        None, "block", "0b0e", "24c8")


def test_egress_rules_are_normalised() -> None:
    net = load_policy(CORPUS / "good" / "network_egress.toml").get("network")
    assert net["egress"] == (
        EgressRule(net="192.0.2.10/32", ports=(5060, 5061), note="call system"),
        EgressRule(net="2001:db8::/32"),
        EgressRule(net="198.51.100.0/24"),
    )


def test_every_table_converts_durations_to_seconds() -> None:
    policy = load_policy(CORPUS / "good" / "every_table.toml")
    assert policy.get("idle")["warn_after"] == 90.0
    assert policy.get("idle")["suspend_after"] == 3600.0
    assert policy.get("print")["check_interval"] == 0.5
    assert policy.get("agent")["heartbeat_interval"] == 15.0
    assert policy.floor_name == "2F south"


def test_hash_is_of_the_exact_text() -> None:
    text = (CORPUS / "good" / "minimal_floor.toml").read_text()
    a = parse_policy(text)
    b = parse_policy(text + "\n# a comment changes the evidence too\n")
    assert a.hash != b.hash and a.tables == b.tables


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0),
    (" 1.5m ", 90.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "0s", "", "m", "-1s", "1e3s", "5 minutes", "٣s",
                                  "9999999999d", "1" + "0" * 400 + "d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_usb_patterns() -> None:
    assert parse_usb_pattern("e0:01:03") == (0xE0, 1, 3)
    assert parse_usb_pattern("ef:04:*") == (0xEF, 4, None)
    assert usb_pattern_matches("08:*:*", 8, 6, 0x50)
    assert not usb_pattern_matches("ef:04:*", 0xEF, 2, 1)
    for bad in ("08:zz", "08:*", "*:06:*", "8:*:*", "08:*:*\n", "08:*:*:*"):
        with pytest.raises(ValueError, match="USB interface pattern"):
            parse_usb_pattern(bad)


# --- the CLI, as a subprocess -------------------------------------------------------------


def test_check_valid_files_exits_0_with_a_summary_each() -> None:
    res = floorguard("check", *map(str, GOOD[:2]))
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    for path, line in zip(GOOD[:2], lines, strict=True):
        assert line.startswith(f"{path}: valid (") and "sha256 " in line


def test_check_a_folder_checks_every_toml_in_it() -> None:
    res = floorguard("check", str(CORPUS / "good"), str(REPO / "policies"))
    assert res.returncode == 0, res.stdout
    assert len(res.stdout.splitlines()) == len(GOOD) + len(SHIPPED)


def test_check_bad_folder_prints_file_line_message_and_exits_2() -> None:
    res = floorguard("check", str(CORPUS / "bad"))
    assert res.returncode == 2
    printed: dict[str, list[tuple[int, str]]] = {}
    for line in res.stdout.splitlines():
        m = re.fullmatch(r"(.+\.toml):(\d+): (.+)", line)
        assert m, f"not FILE:LINE: message: {line!r}"
        printed.setdefault(m.group(1), []).append((int(m.group(2)), m.group(3)))
    assert sorted(printed) == sorted(map(str, BAD))
    for path in BAD:
        got, want = printed[str(path)], expectations(path)
        assert [n for n, _ in got] == [n for n, _ in want]
        assert all(msg.startswith(w) for (_, msg), (_, w) in zip(got, want, strict=True))


def test_check_mixed_files_exits_2_but_reports_the_good_ones() -> None:
    good, bad = GOOD[0], CORPUS / "bad" / "bad_duration.toml"
    res = floorguard("check", str(good), str(bad))
    assert res.returncode == 2
    assert res.stdout.splitlines()[0].startswith(f"{good}: valid")
    assert res.stdout.splitlines()[1].startswith(f"{bad}:4: idle.lock_after: bad duration")


def test_check_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    res = floorguard("check", str(tmp_path / "nope.toml"))
    assert res.returncode == 2
    assert res.stdout.startswith(f"{tmp_path / 'nope.toml'}:0: cannot read the policy")


def test_check_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    res = floorguard("check", str(tmp_path))
    assert res.returncode == 2 and "no policy files" in res.stderr


# --- properties: nothing but PolicyError / ValueError escapes ------------------------------

TOMLISH = st.text(alphabet=st.sampled_from(list('[]{}="\'#.,:*\n abc09_-usbidle\\')),
                  max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), TOMLISH))
def test_parse_policy_raises_only_policy_error(text: str) -> None:
    try:
        parse_policy(text)
    except PolicyError as exc:
        assert exc.problems and all(p.line >= 1 for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_load_policy_on_any_bytes_raises_only_policy_error(tmp_path_factory: pytest.
                                                           TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("p") / "policy.toml"
    path.write_bytes(data)
    try:
        load_policy(path)
    except PolicyError as exc:
        assert all(p.file == str(path) for p in exc.problems)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.none(), st.booleans()))
def test_converters_raise_only_value_error(value: object) -> None:
    for convert in (parse_duration, parse_usb_pattern):
        try:
            convert(value)  # type: ignore[arg-type]
        except ValueError as exc:
            assert str(exc), "the error says what is wrong"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["warn_after", "lock_after", "note", "mode", "allow", "queues"]),
       st.one_of(st.text(max_size=20), st.integers(), st.lists(st.text(max_size=5),
                                                               max_size=3), st.booleans()))
def test_any_value_in_a_real_table_is_judged_not_crashed(key: str, value: object) -> None:
    import json

    for table in ("usb", "idle", "print"):
        text = f"[{table}]\n{key} = {json.dumps(value)}\n"
        try:
            parse_policy(text)
        except PolicyError as exc:
            assert {p.line for p in exc.problems} <= {1, 2}


# --- hostile nesting: refused at its line, before tomllib recurses --------------------------


def test_check_deep_nesting_exits_2_with_the_line_and_no_traceback() -> None:
    path = CORPUS / "bad" / "deep_nesting.toml"
    assert path.stat().st_size > 10_000  # the probe's 10 KB, 5,000 nested "["
    res = floorguard("check", str(path))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout.splitlines() == [
        f"{path}:6: brackets or braces nested more than 32 deep: close the arrays and "
        "inline tables opened on or before this line"]
    assert res.stderr == ""


def test_nesting_up_to_the_bound_is_judged_as_a_value() -> None:
    ok = parse_policy('[floor]\nname = "F1"\n[usb]\nallow = ["03:*:*"]\n')
    assert ok.floor_name == "F1"
    # 32 levels (with the table header's none) reach the converters, which say what is
    # wrong with the value; 33 are refused before parsing.
    at_bound = "[usb]\nallow = " + "[" * 32 + "]" * 32 + "\n"
    with pytest.raises(PolicyError) as err:
        parse_policy(at_bound, "p.toml")
    assert str(err.value.problems[0]).startswith("p.toml:2: usb.allow: ")
    with pytest.raises(PolicyError) as err:
        parse_policy(at_bound.replace("[" * 32, "[" * 33).replace("]" * 32, "]" * 33),
                     "p.toml")
    assert str(err.value).startswith("p.toml:2: brackets or braces nested more than 32")


def test_a_policy_larger_than_the_bound_is_refused_unread() -> None:
    with pytest.raises(PolicyError, match="larger than 1048576 characters"):
        parse_policy("#" * 1_048_577)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.integers(1, 6000), opener=st.sampled_from(["[", "{a = ", "[{b = "]),
       before=st.integers(0, 5), split=st.booleans())
def test_any_depth_of_nesting_is_a_policy_error_never_a_crash(
        depth: int, opener: str, before: int, split: bool) -> None:
    closer = {"[": "]", "{a = ": "}", "[{b = ": "}]"}[opener]
    sep = "\n" if split else ""
    text = "[floor]\n" + "# pad\n" * before + "name = " + sep.join([opener] * depth) + "1" \
        + closer * depth + "\n"
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "p.toml")
    first = err.value.problems[0]
    assert first.file == "p.toml" and 1 <= first.line <= text.count("\n")
