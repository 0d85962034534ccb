"""The agent's id: a UUID made once and kept in ``STATE_DIR/agent_id``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def agent_id(state_dir: str | Path) -> str:
    path = Path(state_dir) / "agent_id"
    try:
        value = path.read_text(encoding="ascii").strip()
        uuid.UUID(value)
        return value
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = str(uuid.uuid4())
    tmp = path.with_name("agent_id.tmp")
    tmp.write_text(value + "\n", encoding="ascii")
    os.replace(tmp, path)
    return value
