"""agent.toml, proven against annotated corpora, arbitrary text, and the real CLI.

Each file in ``tests/policies/config/bad`` says what must be wrong with it in its own
comments: ``# expect: LINE: message`` (the message is a prefix of what follows
``FILE:LINE:`` in the error).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floorguard.config import AgentConfig, ConfigError, load_config
from tests.rigs.processes import REPO, floorguard

CORPUS = REPO / "tests" / "policies" / "config"
GOOD = sorted((CORPUS / "good").glob("*.toml"))
BAD = sorted((CORPUS / "bad").glob("*.toml"))
EXPECT = re.compile(r"^# expect: (\d+): (.+)$")


def expectation(path: Path) -> tuple[int, str]:
    found = [(int(m.group(1)), m.group(2)) for line in path.read_text().splitlines()
             if (m := EXPECT.match(line))]
    assert len(found) == 1, f"{path.name} needs one '# expect: LINE: message' comment"
    return found[0]


def test_the_config_corpora_are_not_empty() -> None:
    assert len(GOOD) >= 2 and len(BAD) >= 12


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_config_loads(path: Path) -> None:
    config = load_config(str(path), env={})
    assert config.source == str(path) and config.seat


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_config_fails_at_the_expected_line(path: Path) -> None:
    line, message = expectation(path)
    with pytest.raises(ConfigError) as err:
        load_config(str(path), env={})
    assert str(err.value).startswith(f"{path}:{line}: {message}"), str(err.value)


def test_every_key_of_the_good_config_is_read() -> None:
    config = load_config(str(CORPUS / "good" / "every_key.toml"), env={})
    assert (config.journal_max_mb, config.journal_max_days, config.link_max_backoff) == (
        1, 3650, 300.0)
    assert config.controls == ("usb", "idle", "print", "files", "processes", "network")


@pytest.mark.parametrize(("var", "value", "message"), [
    ("FLOORGUARD_CONTROLS", "usb, usbb", "unknown control 'usbb'"),
    ("FLOORGUARD_JOURNAL_MAX_MB", "0", "'journal_max_mb' must be between 1 and"),
    ("FLOORGUARD_CONSOLE_URL", "https://[::1", "'console_url' does not parse"),
])
def test_environment_overrides_are_checked_like_the_file(var: str, value: str,
                                                         message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(str(CORPUS / "good" / "loopback.toml"), env={var: value})
    assert str(err.value).startswith(f"environment {var}: {message}"), str(err.value)


# --- arbitrary text: our error or a config, never another exception -------------------

TOMLISH = st.sampled_from([
    "[", "]", "{", "}", "=", '"', "'", '"""', "#", "\n", ",", ".", " ", "\\", "\x00",
    "console_url", "seat", "controls", "journal_max_mb", "https://", "[::1", ":99999",
    "0", "1", "-1", "9223372036854775808", "true", "1979-05-27T07:32:00Z", "inf", "nan",
    '"usb"', '"usbb"', "\udcff", "\u2028",
])


def _config_text() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=200),
                     st.lists(TOMLISH, max_size=60).map("".join),
                     st.integers(1, 3000).map(lambda n: "seat = " + "[" * n))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_config_text())
def test_any_text_is_a_config_or_a_located_config_error(text: str) -> None:
    fd, name = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
        try:
            config = load_config(name, env={})
        except ConfigError as exc:
            assert str(exc).startswith(f"{name}"), str(exc)
            assert "Traceback" not in str(exc)
        else:
            assert isinstance(config, AgentConfig)
    finally:
        os.unlink(name)


# --- the real CLI -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["deep_nesting", "unknown_control", "journal_zero",
                                  "url_ipv6"])
def test_agent_refuses_a_bad_config_with_exit_2_and_the_line(tmp_path: Path,
                                                             name: str) -> None:
    path = CORPUS / "bad" / f"{name}.toml"
    line, message = expectation(path)
    res = floorguard("agent", "--config", str(path),
                     env={"FLOORGUARD_STATE_DIR": str(tmp_path / "state")})
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"floorguard agent: {path}:{line}: {message}"), res.stderr
    assert len(res.stderr.splitlines()) == 1
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("url", ["https://[::1", "https://console.example:99999"])
def test_enroll_refuses_a_console_url_that_does_not_parse(tmp_path: Path, url: str) -> None:
    res = floorguard("enroll", "--console", url, "--code", "x" * 12,
                     env={"FLOORGUARD_STATE_DIR": str(tmp_path / "state")})
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"floorguard enroll: console_url {url!r} does not parse")
    assert "Traceback" not in res.stderr
