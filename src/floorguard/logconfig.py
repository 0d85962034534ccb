"""structlog set-up: JSON lines on stderr for journald, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("token", "password", "secret", "authorization", "code")


def redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]
                   ) -> MutableMapping[str, Any]:
    """Never let a credential reach a log line, whoever passed it."""
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS) and key != "event":
            event[key] = "[redacted]"
    return event


def configure(level: str = "info", *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
