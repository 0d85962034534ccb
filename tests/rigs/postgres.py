"""A private PostgreSQL cluster for the tests: initdb in a temporary directory (as the
``postgres`` user when running as root, since initdb refuses root), served on 127.0.0.1
and a free port with a private socket directory, always stopped at the end.

Use the session fixture ``pg_cluster`` (tests/conftest.py) and ``cluster.new_database()``
for a fresh, empty database per test or per fixture. ``PostgresCluster(root=DIR)`` keeps
the cluster in DIR after ``stop()`` and starts the one found there (the benchmark reuses
a pre-filled store that way).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.rigs.processes import free_port


def pg_bindir() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not versions:
        raise AssertionError("PostgreSQL server binaries not found under /usr/lib/postgresql: "
                             "install the Debian package 'postgresql' (scripts/setup.sh)")
    return versions[-1]


class PostgresCluster:
    def __init__(self, root: Path | None = None) -> None:
        self.bindir = pg_bindir()
        self.keep = root is not None
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        # Short path: the Unix socket path must stay under 108 bytes.
        self.root = root.resolve() if root is not None else Path(tempfile.mkdtemp(prefix="fgpg-"))
        self.data = self.root / "data"
        self.run = self.root / "run"
        self.port = free_port()
        self.started = False
        self._as_postgres = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        if not self._as_postgres:
            return list(args)
        return ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups",
                "env", f"HOME={self.root}", *args]

    def start(self) -> PostgresCluster:
        self.run.mkdir(exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            self.root.chmod(0o755)
            for p in (self.root, self.run):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-U",
                                     "postgres", "--auth=trust", "-E", "UTF8",
                                     "--locale=C.UTF-8", "--no-sync"),
                           check=True, capture_output=True)
        opts = (f"-p {self.port} -k {self.run} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                                 str(self.root / "log"), "-w", "-o", opts, "start"),
                       check=True, capture_output=True)
        self.started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new database, empty or a file copy of ``template``; returns its SQLAlchemy
        URL."""
        name = name or "t_" + uuid.uuid4().hex[:12]
        copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        self.sql(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        """Run one statement in the ``postgres`` database outside a transaction."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        try:
            if self.started:
                subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data),
                                         "-m", "fast", "-w", "stop"), capture_output=True,
                               timeout=60)
        finally:
            self.started = False
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)
