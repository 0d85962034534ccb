"""Real processes for tests: the console under uvicorn and the agent, on private paths
and loopback ports, always stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a floorguard child process: this checkout's code first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOORGUARD_")}
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
    env["FLOORGUARD_CONFIG"] = "/dev/null"  # never read the machine's /etc/floorguard
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    if extra:
        env.update(extra)
    return env


def floorguard(*args: str, env: Mapping[str, str] | None = None, input: str | None = None,
               timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the floorguard CLI as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "floorguard", *args], env=base_env(env),
                          input=input, capture_output=True, text=True, timeout=timeout,
                          check=check)


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


@contextlib.contextmanager
def running(*things: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for t in reversed(things):
            with contextlib.suppress(Exception):
                t.stop()


def need(tool: str, package: str) -> str:
    """The path of a tool the tests drive; a failure naming its package when missing."""
    path = shutil.which(tool)
    if path is None:
        raise AssertionError(f"{tool} is missing: install the Debian package {package} "
                             "(scripts/setup.sh does)")
    return path
