"""The agent: a daemon built from independent controls, one per OS surface.

Controls are imported only when the policy enables them, so an agent that enforces only
USB does not pay for CUPS or psutil code it never runs.
"""

# control name -> "module:Class"; the policy table of the same name enables it.
CONTROLS: dict[str, str] = {
    "usb": "floorguard.agent.usb:UsbControl",
    "idle": "floorguard.agent.idle:IdleControl",
    "files": "floorguard.agent.files:FilesControl",
    "processes": "floorguard.agent.processes:ProcessesControl",
    "network": "floorguard.agent.network:NetworkControl",
    "print": "floorguard.agent.printing:PrintControl",
}
