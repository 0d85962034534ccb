"""Agent configuration: ``/etc/floorguard/agent.toml``, each key overridable by the
environment variable ``FLOORGUARD_<KEY>`` (``FLOORGUARD_STATE_DIR``, ``FLOORGUARD_SEAT``...).

Unknown keys and values of the wrong type are errors naming the file and key, never
silently ignored: a typo in ``console_url`` must not leave an agent quietly offline.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from floorguard.policy import Locator, PolicyError, parse_duration, read_toml

DEFAULT_CONFIG = "/etc/floorguard/agent.toml"


class ConfigError(Exception):
    """A config the agent must not run with; the message says where and what to do."""


@dataclass(frozen=True)
class AgentConfig:
    console_url: str = ""
    seat: str = ""
    state_dir: str = "/var/lib/floorguard"
    policy: str = "/etc/floorguard/policy.toml"
    token_file: str = ""  # default: STATE_DIR/token
    ca_file: str = ""
    allow_insecure_http: bool = False
    sysfs_root: str = "/sys"
    runtime_dir: str = "/run/floorguard"  # pid file the USB udev helper checks
    cups_server: str = ""  # default: CUPS_SERVER or the local socket
    cups_spool: str = "/var/spool/cups"  # cupsd's RequestRoot, watched for new jobs
    cups_conf: str = "/etc/cups/cupsd.conf"  # checked for a policy operators cannot bypass
    log_level: str = "info"
    journal_max_mb: int = 512
    journal_max_days: int = 14
    link_max_backoff: float = 60.0  # seconds; written as a duration ("60s", "5m")
    controls: tuple[str, ...] = field(default=())  # empty: every control the policy has
    source: str = "<defaults>"

    @property
    def seat_label(self) -> str:
        return self.seat or socket.gethostname()

    @property
    def token_path(self) -> Path:
        return Path(self.token_file) if self.token_file else Path(self.state_dir) / "token"


_CHOICES = {"log_level": ("debug", "info", "warning", "error")}


def _coerce(name: str, typ: Any, value: Any, where: str, *, from_env: bool) -> Any:
    """Check a value against the field's type. Environment variables are text, so only
    they are read from strings; in the TOML file a value must have its own type."""
    wrong = f"{where}: '{name}' has a value of the wrong type ({value!r})"
    if typ is bool or typ == "bool":
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str) and value.lower() in (
                "1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        raise ConfigError(f"{wrong}: write true or false")
    if typ is int or typ == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env and isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise ConfigError(f"{wrong}: write a whole number")
    if typ is float or typ == "float":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: '{name}': {exc}") from None
    if typ in ("tuple[str, ...]",):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        raise ConfigError(f"{wrong}: write a list of names")
    if not isinstance(value, str):
        raise ConfigError(f"{wrong}: write a string in quotes")
    allowed = _CHOICES.get(name)
    if allowed and value not in allowed:
        raise ConfigError(f"{where}: '{name}' must be one of {', '.join(allowed)}, "
                          f"not {value!r}")
    return value


# Bounds that turn a slip into an error instead of a journal that keeps nothing (0 MB) or
# a size the store cannot compare (2^63 bytes).
_RANGES = {"journal_max_mb": (1, 1_048_576), "journal_max_days": (1, 3650)}


def _check_url(url: str) -> str | None:
    """What is wrong with ``console_url``, or None. The link checks https-only policy; this
    catches what would otherwise be a traceback deep inside the HTTP client."""
    if not url:
        return None
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "has spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        return f"does not parse ({exc})"
    if parts.scheme not in ("https", "http"):
        return "must start with https://"
    if not parts.hostname:
        return "names no host"
    if port == 0:
        return "has port 0"
    if parts.username is not None or parts.query or parts.fragment:
        return "may hold only scheme, host, port and path (no user, ?query or #fragment)"
    return None


def _check(name: str, value: Any, where: str) -> None:
    """Checks beyond the type, the same for the file and the environment."""
    if name in _RANGES:
        low, high = _RANGES[name]
        if not low <= value <= high:
            raise ConfigError(f"{where}: '{name}' must be between {low} and {high}, "
                              f"not {value}")
    elif name == "controls":
        from floorguard.agent import CONTROLS  # a plain table: imports no control code

        for control in value:
            if control not in CONTROLS:
                raise ConfigError(f"{where}: unknown control {control!r} in 'controls' "
                                  f"(known: {', '.join(sorted(CONTROLS))}); fix the name, "
                                  "or leave 'controls' out to run every control the policy "
                                  "has")
    elif name == "console_url":
        wrong = _check_url(value)
        if wrong:
            raise ConfigError(f"{where}: 'console_url' {wrong}: write it as "
                              "https://HOST[:PORT], e.g. https://console.example:8443")


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read the config file (missing default file is fine) and apply FLOORGUARD_* overrides.

    Every error is ``FILE:LINE: what is wrong: what to do`` (or names the environment
    variable), never a traceback: the agent exits 2 with it at start.
    """
    env = os.environ if env is None else env
    explicit = path is not None or "FLOORGUARD_CONFIG" in env
    cfg_path = Path(path or env.get("FLOORGUARD_CONFIG", DEFAULT_CONFIG))
    values: dict[str, Any] = {}
    known = {f.name: f.type for f in fields(AgentConfig) if f.name != "source"}
    if cfg_path.exists():
        source = str(cfg_path)
        try:
            data = cfg_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise ConfigError(f"{source}:{line}: not UTF-8 text; save the file as UTF-8"
                              ) from None
        try:
            raw = read_toml(text, source)
        except PolicyError as exc:
            raise ConfigError(str(exc.problems[0])) from None
        loc = Locator(text)
        for key, value in raw.items():
            where = f"{source}:{loc.line_of((key,))}"
            if key not in known:
                raise ConfigError(f"{where}: unknown key '{key}' "
                                  f"(known: {', '.join(sorted(known))}); fix its spelling "
                                  "or remove it")
            values[key] = _coerce(key, known[key], value, where, from_env=False)
            _check(key, values[key], where)
    elif explicit:
        raise ConfigError(f"{cfg_path}: no such config file")
    for key, typ in known.items():
        var = "FLOORGUARD_" + key.upper()
        if var in env:
            where = f"environment {var}"
            values[key] = _coerce(key, typ, env[var], where, from_env=True)
            _check(key, values[key], where)
    return AgentConfig(**values, source=str(cfg_path))

