"""The agent: a daemon built from independent controls, one per OS surface.

Controls are imported only when the policy enables them, so an agent that enforces only
USB does not pay for CUPS or psutil code it never runs.
"""

import sys

# Installed for the console or as optional extras, imported by the agent's libraries if
# present, and never used by an agent process: kept out, they are resident memory saved on
# every operator PC (measured with bench/agent_footprint.py).
UNUSED_IN_THE_AGENT = (
    # structlog's deprecated greenlet-local context imports greenlet, and with it the C++
    # runtime (1 MiB), whenever it is installed, as it is for the console's SQLAlchemy.
    "greenlet",
    # httpx imports its command-line tool (click, pygments: 2 MiB) when it is imported.
    "httpx._main",
    # httpcore's async locks; the agent's HTTP clients are all synchronous.
    "anyio",
    # httpx decodes brotli and zstd responses when the modules are there; the console
    # never compresses its answers to agents.
    "brotli",
    "brotlicffi",
    "zstandard",
)


def keep_out_unused_imports() -> None:
    """Call first thing in an agent process (the daemon, its USB worker)."""
    for name in UNUSED_IN_THE_AGENT:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


# control name -> "module:Class"; the policy table of the same name enables it.
CONTROLS: dict[str, str] = {
    "usb": "floorguard.agent.controls.usb.control:UsbControl",
    "idle": "floorguard.agent.controls.idle.control:IdleControl",
    "files": "floorguard.agent.controls.files.control:FilesControl",
    "processes": "floorguard.agent.controls.processes.control:ProcessesControl",
    "network": "floorguard.agent.controls.network.control:NetworkControl",
    "print": "floorguard.agent.controls.print.control:PrintControl",
}
