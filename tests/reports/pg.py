"""A private PostgreSQL cluster for the report tests (initdb as the postgres user, a
Unix socket and a loopback port of its own, stopped afterwards)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.live import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*cmd: str, home: Path) -> list[str]:
    if os.geteuid() != 0:
        return list(cmd)
    return ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", "env",
            f"HOME={home}", *cmd]


@contextmanager
def private_cluster() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh database on a private cluster."""
    if not (PG_BIN / "initdb").exists():
        raise AssertionError("PostgreSQL 15 server binaries are missing: apt-get install "
                             "postgresql (scripts/setup.sh installs it)")
    base = Path(tempfile.mkdtemp(prefix="fgpg"))
    data, run = base / "data", base / "run"
    run.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(run, "postgres", "postgres")
    port = free_port()
    ctl = str(PG_BIN / "pg_ctl")
    started = False
    try:
        subprocess.run(_as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                    "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
                                    "--no-sync", home=base),
                       check=True, capture_output=True, timeout=60)
        subprocess.run(_as_postgres(ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-o",
                                    f"-p {port} -k {run} -c listen_addresses=127.0.0.1 "
                                    "-c fsync=off", "start", home=base),
                       check=True, capture_output=True, timeout=60)
        started = True
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(_as_postgres(ctl, "-D", str(data), "-m", "fast", "-w", "stop",
                                        home=base), capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
