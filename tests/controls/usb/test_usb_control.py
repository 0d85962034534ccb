"""USB control end to end through real libudev and sysfs code (umockdev): the uevent, the
descriptors read, the value written to ``authorized``, the event in the journal."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest

from floorguard.journal import JournalReader
from tests.rigs.usb_devices import DEVICES, FLASH_DRIVE, HEADSET, HUB, HUB_DRIVE, KEYBOARD, RECEIVER

from .conftest import SYS, UsbHarness, attr, wait_until

pytestmark = pytest.mark.umockdev

BASELINE = """
[usb]
mode = "enforce"
allow = ["03:*:*", "09:*:*", "01:*:*"]
block = ["08:*:*", "06:*:*", "02:*:*", "0a:*:*", "e0:*:*", "ef:04:*", "ff:*:*"]
default = "block"
new_keyboard = "warn"
"""

ALLOWED, BLOCKED = "usb.allowed", "usb.blocked"

# device: (authorized, {interface: authorized}, kind, severity, rule, recognition)
TABLE: dict[str, tuple[str, dict[int, str], str, str, str, str]] = {
    "flash_drive": ("0", {0: "0"}, BLOCKED, "violation", "usb.block[08:*:*]", "storage"),
    "headset": ("1", {0: "1", 1: "1", 2: "1", 3: "1"}, ALLOWED, "info", "usb.allow[01:*:*]",
                "audio"),
    "headset_storage": ("1", {0: "1", 1: "1", 2: "1", 3: "1", 4: "0"}, ALLOWED, "warning",
                        "usb.block[08:*:*]", "storage"),
    "android_mtp": ("0", {0: "0"}, BLOCKED, "violation", "usb.block[ff:*:*]", "phone"),
    "android_rndis": ("0", {0: "0", 1: "0", 2: "0"}, BLOCKED, "violation",
                      "usb.block[e0:*:*]", "network"),
    "iphone": ("0", {0: "0"}, BLOCKED, "violation", "usb.block[06:*:*]", "phone"),
    "usb_ethernet": ("0", {0: "0"}, BLOCKED, "violation", "usb.block[ff:*:*]", "network"),
    "keyboard": ("1", {0: "1", 1: "1"}, ALLOWED, "info", "usb.allow[03:*:*]", "hid"),
    "receiver": ("1", {0: "1", 1: "1", 2: "1"}, ALLOWED, "info", "usb.allow[03:*:*]", "hid"),
    "truncated": ("0", {}, BLOCKED, "violation", "invalid_descriptors", "other"),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_device_is_decided_written_and_recorded(usb: UsbHarness, name: str) -> None:
    dev_auth, if_auth, kind, severity, rule, recognition = TABLE[name]
    usb.start(BASELINE)
    path = usb.plug(DEVICES[name], "1-1")
    (event,) = usb.wait_event(kind, port="1-1")
    assert attr(path) == dev_auth
    for num, want in if_auth.items():
        assert attr(f"{path}/1-1:1.{num}") == want, f"interface {num}"
    assert (event["severity"], event["details"]["rule"]) == (severity, rule)
    d = event["details"]
    assert d["recognition"] == recognition
    assert (d["vendor"], d["product"]) == (DEVICES[name].vendor, DEVICES[name].product)
    assert d["serial"] == DEVICES[name].serial
    assert d["product_name"] == DEVICES[name].product_name
    assert d["manufacturer"] == DEVICES[name].manufacturer
    assert event["user"] == "alice" and event["seat"] == "T-07"
    if name == "truncated":
        assert "claims 32 bytes but only 23 are present" in d["reason"]
    else:
        assert d["interfaces"], "the event lists the interfaces"
    if name == "headset_storage":
        assert [(i["number"], i["class"]) for i in d["blocked_interfaces"]] == [(4, "08:06:50")]
    if kind == BLOCKED:
        wait_until(lambda: usb.notices, what="the operator to be notified")
        assert usb.notices[-1][0] == "alice" and "blocked" in usb.notices[-1][2]
    else:
        assert not usb.notices


def test_hub_is_allowed_and_the_drive_behind_it_blocked(usb: UsbHarness) -> None:
    usb.start(BASELINE)
    hub = usb.plug(HUB, "1-2", devnum=7)
    (h,) = usb.wait_event(ALLOWED, port="1-2")
    assert attr(hub) == "1" and attr(f"{hub}/1-2:1.0") == "1"
    assert h["details"]["recognition"] == "hub" and h["details"]["rule"] == "usb.allow[09:*:*]"
    drive = usb.plug(HUB_DRIVE, "1-2.1", devnum=8)
    (d,) = usb.wait_event(BLOCKED, port="1-2.1")
    assert attr(drive) == "0" and attr(f"{drive}/1-2.1:1.0") == "0"
    assert (d["severity"], d["details"]["rule"], d["details"]["recognition"]) == \
        ("violation", "usb.block[08:*:*]", "storage")


def test_root_hubs_deny_by_default_at_start_later_and_after_stop(usb: UsbHarness) -> None:
    assert attr(SYS, "authorized_default") == "1"
    usb.start(BASELINE)
    assert attr(SYS, "authorized_default") == "0"
    assert attr(SYS, "interface_authorized_default") == "0"
    usb.tb.add_from_string(
        "P: /devices/usb2\nE: SUBSYSTEM=usb\nE: DEVTYPE=usb_device\nA: busnum=2\n"
        "A: authorized_default=1\nA: interface_authorized_default=1\n")
    usb.settle()
    assert attr("/sys/devices/usb2", "authorized_default") == "0"
    assert attr("/sys/devices/usb2", "interface_authorized_default") == "0"
    usb.stop()
    assert attr(SYS, "authorized_default") == "0"
    assert attr("/sys/devices/usb2", "interface_authorized_default") == "0"


def test_allow_list_by_serial_and_by_vendor_product(usb: UsbHarness) -> None:
    usb.start(BASELINE + f"""
[[usb.device]]
id = "0781:5567:{FLASH_DRIVE.serial}"
verdict = "allow"
note = "the SV's approved stick"
[[usb.device]]
id = "0951:1666"
verdict = "allow"
""")
    mine = usb.plug(FLASH_DRIVE, "1-1", devnum=5)
    (a,) = usb.wait_event(ALLOWED, port="1-1")
    assert attr(mine) == "1" and attr(f"{mine}/1-1:1.0") == "1"
    assert a["details"]["rule"] == f"usb.device[0781:5567:{FLASH_DRIVE.serial}]"
    other = usb.plug(dataclasses.replace(FLASH_DRIVE, serial="SOMEONE-ELSES"), "1-3",
                     devnum=6)
    (b,) = usb.wait_event(BLOCKED, port="1-3")
    assert attr(other) == "0" and b["details"]["rule"] == "usb.block[08:*:*]"
    kingston = usb.plug(HUB_DRIVE, "1-4", devnum=9)
    (k,) = usb.wait_event(ALLOWED, port="1-4")
    assert attr(kingston) == "1" and k["details"]["rule"] == "usb.device[0951:1666]"


def test_audit_mode_authorizes_everything_and_records_the_same(usb: UsbHarness) -> None:
    usb.start(BASELINE.replace('"enforce"', '"audit"'))
    path = usb.plug(FLASH_DRIVE, "1-1")
    (e,) = usb.wait_event(BLOCKED, port="1-1")
    assert attr(path) == "1" and attr(f"{path}/1-1:1.0") == "1"
    assert e["severity"] == "violation" and e["details"]["rule"] == "usb.block[08:*:*]"
    assert e["details"]["mode"] == "audit"
    assert e["details"]["action"] == "none (audit mode)"
    assert not usb.notices, "audit mode does not tell the operator a device was blocked"
    # The disk the kernel then makes is a violation naming it (umockdev emits the add).
    usb.tb.add_from_string(
        f"P: {path[4:]}/1-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb\nE: SUBSYSTEM=block\n"
        "E: DEVTYPE=disk\nE: DEVNAME=/dev/sdb\nA: size=30031872\n")
    (disk,) = usb.wait_event(BLOCKED, block_device="sdb")
    assert disk["severity"] == "violation"
    assert disk["details"]["devname"] == "/dev/sdb" and disk["details"]["port"] == "1-1"
    assert attr(path) == "1", "audit mode never de-authorizes"


def test_a_block_device_on_a_blocked_device_is_cut_off(usb: UsbHarness) -> None:
    usb.start(BASELINE)
    path = usb.plug(FLASH_DRIVE, "1-1")
    usb.wait_event(BLOCKED, port="1-1")
    with open(f"{path}/authorized", "w") as f:  # someone authorizes it by hand
        f.write("1")
    usb.tb.add_from_string(f"P: {path[4:]}/1-1:1.0/block/sdc\nE: SUBSYSTEM=block\n"
                           "E: DEVTYPE=disk\nE: DEVNAME=/dev/sdc\n")
    (e,) = usb.wait_event(BLOCKED, block_device="sdc")
    assert e["details"]["action"] == "deauthorized" and e["details"]["mode"] == "enforce"
    assert attr(path) == "0"


def test_the_periodic_check_reblocks_a_device_authorized_by_hand(usb: UsbHarness) -> None:
    usb.start(BASELINE)
    path = usb.plug(DEVICES["android_mtp"], "1-1")
    usb.wait_event(BLOCKED, port="1-1")
    with open(f"{path}/authorized", "w") as f:
        f.write("1")
    usb.settle()
    usb.control.check()
    (e,) = usb.wait_event(BLOCKED, rule="authorized_outside_floorguard")
    assert attr(path) == "0" and e["details"]["recognition"] == "phone"


def test_new_keyboard_while_one_is_present_warns(usb: UsbHarness) -> None:
    usb.start(BASELINE)
    usb.plug(KEYBOARD, "1-1", devnum=5)
    (first,) = usb.wait_event(ALLOWED, port="1-1")
    assert first["severity"] == "info" and "new_keyboard" not in first["details"]
    second = usb.plug(RECEIVER, "1-2", devnum=6)
    (e,) = usb.wait_event(ALLOWED, port="1-2")
    assert e["severity"] == "warning" and e["details"]["new_keyboard"] is True
    assert attr(second) == "1"


def test_new_keyboard_block_policy_blocks_it(usb: UsbHarness) -> None:
    usb.start(BASELINE.replace('new_keyboard = "warn"', 'new_keyboard = "block"'))
    usb.plug(KEYBOARD, "1-1", devnum=5)
    usb.wait_event(ALLOWED, port="1-1")
    second = usb.plug(RECEIVER, "1-2", devnum=6)
    (e,) = usb.wait_event(BLOCKED, port="1-2")
    assert (e["severity"], e["details"]["rule"]) == ("violation", "usb.new_keyboard")
    assert attr(second) == "0"
    # Once the first keyboard is gone, a keyboard is welcome again.
    usb.unplug(f"{SYS}/1-1")
    usb.wait_event("usb.removed", port="1-1")
    usb.unplug(second)
    usb.wait_event("usb.removed", port="1-2")
    third = usb.plug(RECEIVER, "1-3", devnum=8)
    usb.wait_event(ALLOWED, port="1-3")
    assert attr(third) == "1"


def test_removal_is_recorded_with_the_identity(usb: UsbHarness) -> None:
    usb.start(BASELINE)
    path = usb.plug(HEADSET, "1-1")
    usb.wait_event(ALLOWED, port="1-1")
    usb.unplug(path)
    (e,) = usb.wait_event("usb.removed", port="1-1")
    assert e["severity"] == "info" and e["details"]["id"] == "046d:0a44"
    assert e["details"]["verdict"] == "allowed"


def test_reconcile_at_start_judges_present_devices(usb: UsbHarness) -> None:
    # Plugged while no agent ran: the udev helper left the keyboard authorized and the
    # stick not; a phone was somehow authorized (e.g. before the rule was installed).
    kb = usb.add(KEYBOARD, "1-1", devnum=3, authorized="1")
    stick = usb.add(FLASH_DRIVE, "1-2", devnum=4)
    phone = usb.add(DEVICES["android_mtp"], "1-3", devnum=5, authorized="1")
    kb_mtime = os.stat(f"{usb.tb.get_root_dir()}{kb}/authorized").st_mtime_ns
    usb.start(BASELINE)
    (k,) = usb.wait_event(ALLOWED, port="1-1")
    (s,) = usb.wait_event(BLOCKED, port="1-2")
    (p,) = usb.wait_event(BLOCKED, port="1-3")
    assert all(e["details"]["present"] is True for e in (k, s, p))
    assert attr(kb) == "1" and attr(stick) == "0" and attr(phone) == "0"
    assert attr(f"{phone}/1-3:1.0") == "0"
    assert os.stat(f"{usb.tb.get_root_dir()}{kb}/authorized").st_mtime_ns == kb_mtime, \
        "an allowed device in use is not written to at all"


def test_policy_reload_changes_a_verdict(usb: UsbHarness) -> None:
    usb.start(BASELINE)
    head = usb.plug(HEADSET, "1-1", devnum=5)
    stick = usb.plug(FLASH_DRIVE, "1-2", devnum=6)
    usb.wait_event(ALLOWED, port="1-1")
    usb.wait_event(BLOCKED, port="1-2")
    before = len(usb.events())
    usb.reload(BASELINE + f"""
[[usb.device]]
id = "0781:5567:{FLASH_DRIVE.serial}"
verdict = "allow"
""")
    (e,) = usb.wait_event(ALLOWED, port="1-2")
    assert e["details"]["previous"] == {"verdict": "blocked", "rule": "usb.block[08:*:*]"}
    assert attr(stick) == "1" and attr(f"{stick}/1-2:1.0") == "1"
    assert attr(head) == "1"
    assert len(usb.events()) == before + 1, "only the changed verdict is recorded"


def test_a_replugged_device_is_judged_by_the_rules_in_force_and_its_own_serial(
        usb: UsbHarness) -> None:
    # A plugged device's judgement is kept for its next plug; it must never outlive a
    # reload, nor pass from one serial number to another of the same model.
    usb.start(BASELINE + f"""
[[usb.device]]
id = "0781:5567:{FLASH_DRIVE.serial}"
verdict = "allow"
""")
    stick = usb.plug(FLASH_DRIVE, "1-1", devnum=5)
    usb.wait_event(ALLOWED, port="1-1", serial=FLASH_DRIVE.serial)
    assert attr(stick) == "1"
    other = "00000000000000000001"

    def replug(serial: str, devnum: int) -> None:
        usb.tb.uevent(stick, "remove")
        usb.settle()
        usb.tb.set_attribute(stick, "authorized", "0")
        usb.tb.set_attribute(stick, "serial", serial)
        usb.tb.set_attribute(stick, "devnum", str(devnum))
        usb.tb.set_property(stick, "DEVNUM", f"{devnum:03d}")
        usb.tb.uevent(stick, "add")
        usb.settle()

    for n, (serial, verdict) in enumerate([(other, "0"), (FLASH_DRIVE.serial, "1"),
                                           (other, "0")]):
        replug(serial, 6 + n)
        kind = ALLOWED if verdict == "1" else BLOCKED
        usb.wait_event(kind, count=1 + n // 2 + (verdict == "1"), port="1-1", serial=serial)
        assert attr(stick) == verdict, (n, serial)
    rule = f"usb.device[0781:5567:{FLASH_DRIVE.serial}]"
    usb.reload(BASELINE + f"""
[[usb.device]]
id = "0781:5567:{FLASH_DRIVE.serial}"
verdict = "block"
""")
    replug(FLASH_DRIVE.serial, 9)
    (e,) = usb.wait_event(BLOCKED, port="1-1", serial=FLASH_DRIVE.serial, rule=rule)
    assert attr(stick) == "0" and e["severity"] == "violation"


def test_burst_of_100_plugs_none_missed(usb: UsbHarness) -> None:
    # umockdev takes milliseconds to build each device, so the devices are built first
    # and then their add uevents are replayed back to back: a real burst.
    mix = [FLASH_DRIVE, HUB, DEVICES["android_mtp"], KEYBOARD, DEVICES["usb_ethernet"]]
    paths = [usb.add(mix[n % len(mix)], f"1-{n + 1}", devnum=n + 2) for n in range(100)]
    usb.start(BASELINE)
    for path in paths:
        usb.tb.uevent(path, "remove")
    usb.wait_event("usb.removed", count=100)
    for path in paths:
        usb.tb.uevent(path, "add")
    usb.settle()
    decided = (usb.wait_event(ALLOWED, count=40, present=False)
               + usb.wait_event(BLOCKED, count=60, present=False))
    assert sorted(e["details"]["port"] for e in decided) == sorted(
        f"1-{n + 1}" for n in range(100))
    for n, path in enumerate(paths):
        want = "1" if mix[n % len(mix)] in (HUB, KEYBOARD) else "0"
        assert attr(path) == want, path
    with JournalReader(usb.config.state_dir) as reader:
        assert reader.verify()[0] is None


def test_a_stopped_control_leaves_devices_and_writes_the_pid_file_only_while_running(
        usb: UsbHarness) -> None:
    pid_file = os.path.join(usb.config.runtime_dir, "usb-agent.pid")
    usb.start(BASELINE)
    with open(pid_file) as f:
        assert f.read().strip() == str(os.getpid())
    head = usb.plug(HEADSET, "1-1")
    usb.wait_event(ALLOWED, port="1-1")
    usb.stop()
    assert not os.path.exists(pid_file)
    assert attr(head) == "1"


def test_interfaces_appearing_after_authorization_follow_the_decision(
        usb: UsbHarness) -> None:
    # On a real kernel the interfaces appear only once the device is authorized (and
    # again after a configuration switch), each unauthorized under the deny default.
    usb.start(BASELINE)
    bare = dataclasses.replace(DEVICES["headset_storage"], interfaces=())
    path = usb.plug(bare, "1-1")
    (e,) = usb.wait_event(ALLOWED, port="1-1")
    assert e["severity"] == "warning" and attr(path) == "1"
    for num, cls in ((0, "01"), (3, "03"), (4, "08")):
        usb.tb.add_from_string(
            f"P: {path[4:]}/1-1:1.{num}\nE: SUBSYSTEM=usb\nE: DEVTYPE=usb_interface\n"
            f"A: bInterfaceClass={cls}\nA: authorized=0\n")
    usb.settle()
    assert attr(f"{path}/1-1:1.0") == "1" and attr(f"{path}/1-1:1.3") == "1"
    assert attr(f"{path}/1-1:1.4") == "0", "the storage interface never gets a driver"


def test_the_agent_runs_decisions_in_a_worker_process(usb: UsbHarness) -> None:
    control = usb.start(BASELINE, worker=True)
    with open(os.path.join(usb.config.runtime_dir, "usb-agent.pid")) as f:
        pid = int(f.read())
    assert pid != os.getpid() and pid == control.status()["worker"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"floorguard.agent.controls.usb.control import worker_main" in f.read()
    stick = usb.plug(FLASH_DRIVE, "1-1", settle=False)
    head = usb.plug(HEADSET, "1-2", devnum=6, settle=False)
    (blocked,) = usb.wait_event(BLOCKED, port="1-1")
    (allowed,) = usb.wait_event(ALLOWED, port="1-2")
    assert allowed["details"]["rule"] == "usb.allow[01:*:*]"
    assert blocked["user"] == "alice" and blocked["details"]["recognition"] == "storage"
    assert attr(stick) == "0" and attr(head) == "1"
    # The notice comes from this side, after the violation is durable.
    wait_until(lambda: usb.notices, what="the operator to be notified")
    assert usb.notices[0][0] == "alice" and "Cruzer Blade" in usb.notices[0][2]
    usb.reload(BASELINE + f'[[usb.device]]\nid = "0781:5567:{FLASH_DRIVE.serial}"\n'
               'verdict = "allow"\n')
    usb.wait_event(ALLOWED, port="1-1")
    assert attr(stick) == "1"
    usb.stop()
    assert not os.path.exists(os.path.join(usb.config.runtime_dir, "usb-agent.pid"))
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), what="the worker to exit")


def test_a_worker_that_dies_is_recorded_and_restarted(usb: UsbHarness) -> None:
    control = usb.start(BASELINE, worker=True)
    first = control.status()["worker"]
    os.kill(first, 9)
    (gap,) = usb.wait_event("agent.control_unavailable", control="usb")
    assert "exited" in gap["details"]["reason"]
    assert attr(SYS, "authorized_default") == "0", "deny by default while no worker runs"
    control.check()
    second = control.status()["worker"]
    assert second and second != first
    usb.plug(DEVICES["android_mtp"], "1-1", settle=False)
    usb.wait_event(BLOCKED, port="1-1")


def test_a_sigterm_to_the_whole_service_leaves_the_worker_deciding(usb: UsbHarness) -> None:
    """systemd's stop sends SIGTERM to every process of the service at once: the worker
    must not die before the agent has ended it (by closing its input)."""
    control = usb.start(BASELINE, worker=True)
    pid = control.status()["worker"]
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    usb.plug(DEVICES["android_mtp"], "1-1", settle=False)
    usb.wait_event(BLOCKED, port="1-1")
    assert control.status()["worker"] == pid
    assert not usb.events("agent.control_unavailable")
