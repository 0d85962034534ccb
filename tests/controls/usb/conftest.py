"""USB tests against real libudev and sysfs code through umockdev.

Tests marked ``umockdev`` need ``libumockdev-preload.so`` loaded into the test process, so
that pyudev, the agent's plain ``open()`` calls and the udev helper see the mock ``/sys``.
A preload cannot be added to a running process: when pytest runs without it, these tests
are handed to one child pytest run under ``umockdev-wrapper`` inside a private network
namespace (where ``net.unix.max_dgram_qlen`` can be raised, so a burst of uevents does not
abort the preload library), and each test here reports its child's outcome. One plain
``pytest`` command therefore runs the whole suite.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rigs.processes import REPO

PRELOAD = "libumockdev-preload.so"
RESULTS_ENV = "FLOORGUARD_UMOCKDEV_RESULTS"
QLEN = 2048
CHILD_TIMEOUT = 300


def under_preload() -> bool:
    return PRELOAD in os.environ.get("LD_PRELOAD", "")


# --- running the umockdev tests in a child under the preload ------------------------------


class _ChildRun:
    """One child pytest run for every umockdev test of this session, started lazily."""

    def __init__(self, nodeids: list[str]):
        self.nodeids = nodeids
        self.results: dict[str, dict[str, Any]] | None = None
        self.returncode = 0
        self.output = ""
        self.wall = 0.0

    def run(self) -> None:
        missing = [t for t in ("umockdev-wrapper", "unshare") if shutil.which(t) is None]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not found: install the Debian packages "
                               "umockdev, libumockdev0, gir1.2-umockdev-1.0 and util-linux "
                               "(scripts/setup.sh does)")
        if os.geteuid() != 0:
            raise RuntimeError("the umockdev tests run in a private network namespace "
                               "(unshare -n) to raise net.unix.max_dgram_qlen: run as root")
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False) as f:
            results_path = f.name
        script = (f"echo {QLEN} > /proc/sys/net/unix/max_dgram_qlen && "
                  'exec umockdev-wrapper "$@"')
        cmd = ["unshare", "-n", "sh", "-c", script, "sh", sys.executable, "-m", "pytest",
               "-q", "-p", "no:cacheprovider", *self.nodeids]
        env = {**os.environ, RESULTS_ENV: results_path}
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=CHILD_TIMEOUT, check=False)
            self.returncode, self.output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            self.returncode = -1
            self.output = f"timed out after {CHILD_TIMEOUT}s\n{exc.stdout!r}"
        self.wall = time.monotonic() - started
        results: dict[str, dict[str, Any]] = {}
        with open(results_path, encoding="utf-8") as f:
            for line in f:
                rep = json.loads(line)
                entry = results.setdefault(rep["nodeid"], {"outcome": "passed", "text": ""})
                if rep["outcome"] != "passed" and entry["outcome"] == "passed":
                    entry.update(outcome=rep["outcome"], when=rep["when"], text=rep["text"])
                if rep["when"] == "call":
                    entry["called"] = True
        os.unlink(results_path)
        self.results = results

    def result(self, nodeid: str) -> dict[str, Any]:
        if self.results is None:
            self.run()
        assert self.results is not None
        return self.results.get(nodeid, {})


class UmockdevFailure(Exception):
    pass


class UmockdevProxy(pytest.Item):
    """Stands for one umockdev test and reports what it did in the child run."""

    def __init__(self, *, runner: _ChildRun, **kwargs: Any):
        super().__init__(**kwargs)
        self.runner = runner
        self.add_marker("umockdev")

    def runtest(self) -> None:
        res = self.runner.result(self.nodeid)
        tail = self.runner.output[-4000:]
        if not res:
            raise UmockdevFailure(f"{self.nodeid} did not run under umockdev (child exit "
                                  f"{self.runner.returncode}; exit 5 means no tests ran):\n"
                                  f"{tail}")
        if res["outcome"] == "skipped":
            raise UmockdevFailure(f"skipped under umockdev, which this suite does not "
                                  f"allow:\n{res['text']}")
        if res["outcome"] != "passed":
            raise UmockdevFailure(f"failed under umockdev ({res.get('when')}):\n{res['text']}")
        if not res.get("called"):
            raise UmockdevFailure(f"never called under umockdev:\n{tail}")
        if self.runner.returncode not in (0, 1):  # 1: some test failed, reported by it
            raise UmockdevFailure(f"the umockdev run exited {self.runner.returncode}:\n{tail}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, UmockdevFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"{self.name} (under umockdev)"


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the selected tests run
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    if under_preload():
        return
    mocked = [i for i in items if i.get_closest_marker("umockdev")]
    if not mocked:
        return
    runner = _ChildRun([i.nodeid for i in mocked])
    for index, item in enumerate(items):
        if item in mocked:
            proxy = UmockdevProxy.from_parent(item.parent, name=item.name, runner=runner)
            items[index] = proxy


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get(RESULTS_ENV)
    if not path or not under_preload():
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"nodeid": report.nodeid, "when": report.when,
                            "outcome": report.outcome,
                            "text": report.longreprtext if report.failed or report.skipped
                            else ""}) + "\n")


# --- fixtures for the tests that run under the preload ------------------------------------


@pytest.fixture
def testbed() -> Iterator[Any]:
    """A umockdev testbed holding one root hub, ``usb1``."""
    if not under_preload():
        pytest.fail("this test needs LD_PRELOAD=libumockdev-preload.so.0 (run it through "
                    "pytest, which re-runs it under umockdev-wrapper); without it pyudev "
                    "would see the real /sys")
    import gi

    gi.require_version("UMockdev", "1.0")
    from gi.repository import UMockdev

    from tests.rigs.usb_devices import ROOT_HUB

    tb = UMockdev.Testbed.new()
    tb.add_from_string(ROOT_HUB)
    assert os.path.exists("/sys/devices/usb1/authorized_default"), \
        "the mock /sys is not in effect"
    yield tb
    del tb
    gc.collect()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    return d


SYS = "/sys/devices/usb1"


class UsbHarness:
    """The real USB decisions inside a real Agent (journal, recorder, operator), against
    the testbed: in this process (``UsbDecider``, so tests can wait for its uevents), or
    in the worker process the agent runs (``UsbControl``, ``worker=True``)."""

    def __init__(self, tb: Any, tmp_path: Path, run_dir: Path):
        from floorguard.agent.daemon import Agent
        from floorguard.config import AgentConfig

        self.tb = tb
        self.tmp_path = tmp_path
        self.config = AgentConfig(state_dir=str(tmp_path / "state"), seat="T-07",
                                  runtime_dir=str(run_dir), sysfs_root="/sys")
        self.agent = Agent(self.config)
        self.agent.journal.open()
        self.agent.agent_id = "agent-under-test"
        self.agent.operator.set("alice", "test")
        self.notices: list[tuple[str | None, str, str]] = []
        self.control: Any = None

    def start(self, policy_text: str, worker: bool = False) -> Any:
        from floorguard.agent.controls.usb.control import UsbControl, UsbDecider
        from floorguard.policy import parse_policy

        policy = parse_policy(policy_text, str(self.tmp_path / "policy.toml"))
        self.agent.policy = policy
        cls = UsbControl if worker else UsbDecider
        self.control = cls(self.agent.ctx,
                           notify=lambda u, t, b: self.notices.append((u, t, b)))
        self.control.start(policy)
        return self.control

    def reload(self, policy_text: str) -> None:
        from floorguard.policy import parse_policy

        policy = parse_policy(policy_text, str(self.tmp_path / "policy.toml"))
        self.agent.policy = policy
        self.control.apply_policy(policy)

    def add(self, dev: Any, port: str, devnum: int = 5, authorized: str = "0") -> str:
        """Put the device into the mock sysfs. umockdev emits the "add" uevent of the
        device and then of each interface, as the kernel does."""
        from tests.rigs.usb_devices import umockdev_text

        parent = SYS if "." not in port else f"{SYS}/{port.rsplit('.', 1)[0]}"
        self.tb.add_from_string(umockdev_text(dev, port, devnum, parent=parent[4:],
                                              authorized=authorized))
        return f"{parent}/{port}"

    def plug(self, dev: Any, port: str, devnum: int = 5, settle: bool = True) -> str:
        path = self.add(dev, port, devnum)
        if settle:
            self.settle()
        return path

    def settle(self) -> None:
        """Wait until the control has handled every uevent sent so far: uevents reach it
        in order, so once it has seen a "change" of the root hub sent now, it has seen
        the device and interface adds before it. The mark is cleared first: the last
        settle's "change" must not pass for this one."""
        self.control.last_uevent = ("", "")
        self.tb.uevent(SYS, "change")
        wait_until(lambda: self.control.last_uevent == ("change", SYS), 10,
                   "the control to handle the uevents")

    def unplug(self, path: str) -> None:
        self.tb.uevent(path, "remove")
        self.tb.remove_device(path)

    def events(self, kind: str | None = None, **details: Any) -> list[dict[str, Any]]:
        from floorguard.journal import JournalReader

        with JournalReader(self.config.state_dir) as reader:
            recs = list(reader.records())
        return [r for r in recs if (kind is None or r["kind"] == kind)
                and all(r["details"].get(k) == v for k, v in details.items())]

    def wait_event(self, kind: str, count: int = 1, timeout: float = 10.0,
                   **details: Any) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            hits = self.events(kind, **details)
            return hits if len(hits) >= count else []

        hits: list[dict[str, Any]] = wait_until(found, timeout, f"{count} x {kind} {details}")
        return hits

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()
            self.control = None

    def close(self) -> None:
        self.stop()
        self.agent.journal.close()


def attr(path: str, name: str = "authorized") -> str:
    with open(f"{path}/{name}", encoding="ascii") as f:
        return f.read().strip()


@pytest.fixture
def usb(testbed: Any, tmp_path: Path, run_dir: Path) -> Iterator[UsbHarness]:
    h = UsbHarness(testbed, tmp_path, run_dir)
    try:
        yield h
    finally:
        h.close()
