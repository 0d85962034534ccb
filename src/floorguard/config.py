"""Agent configuration: ``/etc/floorguard/agent.toml``, each key overridable by the
environment variable ``FLOORGUARD_<KEY>`` (``FLOORGUARD_STATE_DIR``, ``FLOORGUARD_SEAT``...).

Unknown keys and values of the wrong type are errors naming the file and key, never
silently ignored: a typo in ``console_url`` must not leave an agent quietly offline.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "/etc/floorguard/agent.toml"


class ConfigError(Exception):
    pass


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
        from .policy import parse_duration

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


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read the config file (missing default file is fine) and apply FLOORGUARD_* overrides."""
    env = os.environ if env is None else env
    explicit = path is not None or "FLOORGUARD_CONFIG" in env
    cfg_path = Path(path or env.get("FLOORGUARD_CONFIG", DEFAULT_CONFIG))
    values: dict[str, Any] = {}
    known = {f.name: f.type for f in fields(AgentConfig) if f.name != "source"}
    if cfg_path.exists():
        try:
            raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cfg_path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{cfg_path}: cannot read: {exc.strerror}") from None
        for key, value in raw.items():
            if key not in known:
                raise ConfigError(f"{cfg_path}: unknown key '{key}' "
                                  f"(known: {', '.join(sorted(known))})")
            values[key] = _coerce(key, known[key], value, str(cfg_path), from_env=False)
    elif explicit:
        raise ConfigError(f"{cfg_path}: no such config file")
    for key, typ in known.items():
        var = "FLOORGUARD_" + key.upper()
        if var in env:
            values[key] = _coerce(key, typ, env[var], f"environment {var}", from_env=True)
    return AgentConfig(**values, source=str(cfg_path))
