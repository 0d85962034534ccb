"""USB descriptors and the USB policy's decisions, as plain functions on plain data.

Nothing here touches the OS. ``parse_descriptors`` reads the binary ``descriptors``
attribute the kernel keeps for every USB device (the device descriptor followed by the raw
configuration descriptors with everything inside them); it exists before the device is
authorized, when its interfaces do not yet exist in sysfs. ``recognize`` names what a device
is (storage, phone, network, hid, audio, hub, other) and ``evaluate`` applies the policy:
``[[usb.device]]`` rules decide the whole device first, otherwise every interface is judged
``block`` before ``allow`` before ``default``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from floorguard.policy import UsbDeviceRule, UsbSettings, parse_usb_pattern

__all__ = [
    "Configuration",
    "Decision",
    "DescriptorError",
    "Descriptors",
    "DeviceDescriptor",
    "Endpoint",
    "Function",
    "Identity",
    "Interface",
    "InterfaceVerdict",
    "Pattern",
    "Recognition",
    "UsbRules",
    "compile_pattern",
    "evaluate",
    "parse_descriptors",
    "recognize",
]

# Descriptor types (USB 2.0 table 9-5, USB ECN "Interface Association Descriptor").
_DEVICE, _CONFIG, _INTERFACE, _ENDPOINT, _IAD = 0x01, 0x02, 0x04, 0x05, 0x0B
_DEVICE_LEN, _CONFIG_LEN, _INTERFACE_LEN, _ENDPOINT_LEN, _IAD_LEN = 18, 9, 9, 7, 8
# The kernel reads at most this many configurations (USB_MAXCONFIG).
_MAX_CONFIGS = 8


class DescriptorError(ValueError):
    """The descriptors are malformed or truncated; the message says where and how."""


class DeviceDescriptor(NamedTuple):
    usb_version: int
    device_class: int
    device_subclass: int
    device_protocol: int
    max_packet_size0: int
    vendor: int
    product: int
    device_version: int
    i_manufacturer: int
    i_product: int
    i_serial: int
    num_configurations: int


class Endpoint(NamedTuple):
    address: int
    attributes: int

    @property
    def direction_in(self) -> bool:
        return bool(self.address & 0x80)

    @property
    def transfer(self) -> str:
        return ("control", "isochronous", "bulk", "interrupt")[self.attributes & 0x03]


class Function(NamedTuple):
    """An Interface Association Descriptor: interfaces that form one function."""

    first_interface: int
    interface_count: int
    cls: int
    subclass: int
    protocol: int


class Interface(NamedTuple):
    config: int  # bConfigurationValue of the configuration holding it
    number: int
    alternate: int
    cls: int
    subclass: int
    protocol: int
    i_interface: int
    endpoints: tuple[Endpoint, ...] = ()
    function: Function | None = None

    @property
    def triple(self) -> str:
        return f"{self.cls:02x}:{self.subclass:02x}:{self.protocol:02x}"


class Configuration(NamedTuple):
    value: int
    num_interfaces: int
    attributes: int
    max_power: int
    interfaces: tuple[Interface, ...]
    functions: tuple[Function, ...]


@dataclass(frozen=True)
class Descriptors:
    device: DeviceDescriptor
    configurations: tuple[Configuration, ...]
    # Every interface (and alternate setting) of every configuration.
    interfaces: tuple[Interface, ...]



def parse_descriptors(data: bytes) -> Descriptors:
    """Parse the kernel's ``descriptors`` attribute; raise DescriptorError when it is wrong.

    Every configuration is parsed, not only the one the kernel would choose: a device is
    only as harmless as its worst configuration, since software can switch to another one
    after authorization.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DescriptorError(f"descriptors must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _DEVICE_LEN:
        raise DescriptorError(f"truncated device descriptor: {len(data)} of {_DEVICE_LEN} bytes")
    blen, btype = data[0], data[1]
    if btype != _DEVICE:
        raise DescriptorError(f"byte 1: expected the device descriptor (type 0x01), "
                              f"found type 0x{btype:02x}")
    if blen != _DEVICE_LEN:
        raise DescriptorError(f"byte 0: the device descriptor must be {_DEVICE_LEN} bytes "
                              f"long, it says {blen}")
    fields = struct.unpack_from("<HBBBBHHHBBBB", data, 2)
    device = DeviceDescriptor(*fields)
    if device.num_configurations == 0:
        raise DescriptorError("the device descriptor announces no configuration")
    configs: list[Configuration] = []
    offset = _DEVICE_LEN
    while offset < len(data):
        if len(configs) >= _MAX_CONFIGS:
            raise DescriptorError(f"byte {offset}: more than {_MAX_CONFIGS} configurations")
        config, offset = _parse_config(data, offset, len(configs) + 1)
        configs.append(config)
    if not configs:
        raise DescriptorError("no configuration descriptor follows the device descriptor")
    if len(configs) != min(device.num_configurations, _MAX_CONFIGS):
        raise DescriptorError(f"the device descriptor announces {device.num_configurations} "
                              f"configuration(s), {len(configs)} present")
    return Descriptors(device=device, configurations=tuple(configs),
                       interfaces=tuple(i for c in configs for i in c.interfaces))


def _parse_config(data: bytes, start: int, index: int) -> tuple[Configuration, int]:
    where = f"configuration {index} (byte {start})"
    if len(data) - start < _CONFIG_LEN:
        raise DescriptorError(f"{where}: truncated, {len(data) - start} of {_CONFIG_LEN} bytes")
    blen, btype = data[start], data[start + 1]
    if btype != _CONFIG:
        raise DescriptorError(f"{where}: expected a configuration descriptor (type 0x02), "
                              f"found type 0x{btype:02x}")
    if blen < _CONFIG_LEN:
        raise DescriptorError(f"{where}: length {blen} is shorter than {_CONFIG_LEN}")
    total, num_if, value, _icfg, attrs, power = struct.unpack_from("<HBBBBB", data, start + 2)
    if total < blen:
        raise DescriptorError(f"{where}: total length {total} is shorter than its own "
                              f"descriptor ({blen})")
    end = start + total
    if end > len(data):
        raise DescriptorError(f"{where}: truncated, it claims {total} bytes but only "
                              f"{len(data) - start} are present")
    interfaces: list[Interface] = []
    functions: list[Function] = []
    current: tuple[Any, ...] | None = None
    endpoints: list[Endpoint] = []

    def close() -> None:
        if current is not None:
            cfg, number, alt, cls, sub, proto, iif, fn = current
            interfaces.append(Interface(cfg, number, alt, cls, sub, proto, iif,
                                        tuple(endpoints), fn))

    pos = start + blen
    while pos < end:
        if end - pos < 2:
            raise DescriptorError(f"{where}: a descriptor header at byte {pos} is cut off")
        dlen, dtype = data[pos], data[pos + 1]
        if dlen < 2:
            raise DescriptorError(f"{where}: a descriptor at byte {pos} has length {dlen}")
        if pos + dlen > end:
            raise DescriptorError(f"{where}: the descriptor at byte {pos} (type 0x{dtype:02x}, "
                                  f"{dlen} bytes) runs past the configuration's end")
        if dtype == _INTERFACE:
            if dlen < _INTERFACE_LEN:
                raise DescriptorError(f"{where}: interface descriptor at byte {pos} is {dlen} "
                                      f"bytes, needs {_INTERFACE_LEN}")
            close()
            number, alt, _neps, cls, sub, proto, iif = struct.unpack_from("<7B", data, pos + 2)
            fn = next((f for f in functions
                       if f.first_interface <= number < f.first_interface + f.interface_count),
                      None) if functions else None
            current = (value, number, alt, cls, sub, proto, iif, fn)
            endpoints = []
        elif dtype == _ENDPOINT:
            if dlen < _ENDPOINT_LEN:
                raise DescriptorError(f"{where}: endpoint descriptor at byte {pos} is {dlen} "
                                      f"bytes, needs {_ENDPOINT_LEN}")
            if current is None:
                raise DescriptorError(f"{where}: endpoint descriptor at byte {pos} comes "
                                      "before any interface")
            endpoints.append(Endpoint(data[pos + 2], data[pos + 3]))
        elif dtype == _IAD:
            if dlen < _IAD_LEN:
                raise DescriptorError(f"{where}: interface association at byte {pos} is {dlen} "
                                      f"bytes, needs {_IAD_LEN}")
            functions.append(Function(*struct.unpack_from("<5B", data, pos + 2)))
        # Class-specific (HID 0x21, CS_INTERFACE 0x24, ...) and other descriptors carry
        # nothing the policy judges; they are skipped by their length.
        pos += dlen
    close()
    return Configuration(value=value, num_interfaces=num_if, attributes=attrs,
                         max_power=power, interfaces=tuple(interfaces),
                         functions=tuple(functions)), end


# --- recognition ------------------------------------------------------------------------

APPLE = 0x05AC
# Risk order: what a device is called when it is several things at once. A phone that
# tethers is "network": the open link is the larger leak.
KINDS = ("network", "phone", "storage", "audio", "hid", "hub", "other")


@dataclass(frozen=True)
class Recognition:
    kind: str  # one of KINDS, the riskiest function found
    functions: tuple[str, ...]  # every function found, e.g. ("audio", "hid", "keyboard")

    @property
    def keyboard(self) -> bool:
        return "keyboard" in self.functions


def _interface_functions(desc: Descriptors, i: Interface, name: str) -> set[str]:
    c, s, p = i.cls, i.subclass, i.protocol
    out: set[str] = set()
    if c == 0x08:
        out.add("storage")
    elif c == 0x06:  # still image: PTP, and MTP on most phones
        out.add("phone")
    elif (c == 0xE0 and (s, p) == (0x01, 0x03)) or (c, s, p) == (0xEF, 0x04, 0x01):
        out.update(("network", "rndis"))
    elif c == 0x02 and s in (0x06, 0x0D, 0x0E):  # CDC ECM, NCM, MBIM
        out.add("network")
    elif c == 0x02 and (s, p) == (0x02, 0xFF):  # RNDIS presented as CDC ACM
        out.update(("network", "rndis"))
    elif c == 0x0A:
        out.add("network")
    elif c == 0x01:
        out.add("audio")
    elif c == 0x03:
        out.add("hid")
        if s == 0x01 and p == 0x01:
            out.add("keyboard")
        elif s == 0x01 and p == 0x02:
            out.add("mouse")
    elif c == 0x09:
        out.add("hub")
    elif c == 0xFF and _vendor_phone(desc, i, name):
        out.add("phone")
    return out


def _vendor_phone(desc: Descriptors, i: Interface, name: str) -> bool:
    """Vendor-specific interfaces that phones use. Before a device is configured its
    interface strings are unknown, so Android's MTP interface is recognised by shape: a
    named vendor interface with the PTP endpoint layout on a single-configuration device
    (USB-Ethernet chips share the layout but have no interface name or a second, CDC
    configuration). This only names the device; the verdict comes from the patterns."""
    s, p = i.subclass, i.protocol
    return ((desc.device.vendor == APPLE and s == 0xFE)  # usbmux (iTunes, libimobiledevice)
            or (s, p) == (0x42, 0x01)  # Android debug bridge
            or "MTP" in name.upper()
            or ((s, p) == (0xFF, 0x00) and i.i_interface != 0
                and len(desc.configurations) == 1 and _mtp_endpoints(i.endpoints)))


def _mtp_endpoints(eps: tuple[Endpoint, ...]) -> bool:
    kinds = sorted((e.transfer, e.direction_in) for e in eps)
    return kinds == [("bulk", False), ("bulk", True), ("interrupt", True)]


def recognize(desc: Descriptors,
              interface_names: Mapping[tuple[int, int], str] | None = None) -> Recognition:
    """Name what a device is. ``interface_names`` maps (config, interface number) to the
    interface string when sysfs has it (only once a device is configured)."""
    names = interface_names or {}
    found: set[str] = set()
    for i in desc.interfaces:
        found |= _interface_functions(desc, i, names.get((i.config, i.number), ""))
    if desc.device.device_class == 0x09:
        found.add("hub")
    kind = next((k for k in KINDS if k in found), "other")
    return Recognition(kind=kind, functions=tuple(sorted(found)))


# --- rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """A compiled ``cc:ss:pp`` interface pattern."""

    text: str
    cls: int | None
    subclass: int | None
    protocol: int | None

    def matches(self, cls: int, subclass: int, protocol: int) -> bool:
        return ((self.cls is None or self.cls == cls)
                and (self.subclass is None or self.subclass == subclass)
                and (self.protocol is None or self.protocol == protocol))


def compile_pattern(text: str) -> Pattern:
    """``"08:*:*"`` -> Pattern; raises ValueError saying how to write it."""
    cls, sub, proto = parse_usb_pattern(text)
    return Pattern(text=text.lower(), cls=cls, subclass=sub, protocol=proto)


@dataclass(frozen=True)
class UsbRules:
    """The ``[usb]`` table, compiled once per policy so that decisions parse nothing."""

    mode: str = "enforce"
    allow: tuple[Pattern, ...] = ()
    block: tuple[Pattern, ...] = ()
    default: str = "block"
    devices: tuple[UsbDeviceRule, ...] = ()
    new_keyboard: str = "warn"
    notify: bool = True
    # (class, subclass, protocol) -> (verdict, rule): the patterns never change for one
    # policy, and a decision sits on the path from uevent to kernel.
    _judged: dict[tuple[int, int, int], tuple[str, str]] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, s: UsbSettings) -> UsbRules:
        """The ``[usb]`` table, with its patterns compiled once."""
        return cls(mode=s.mode, allow=tuple(compile_pattern(p) for p in s.allow),
                   block=tuple(compile_pattern(p) for p in s.block), default=s.default,
                   devices=tuple(s.device), new_keyboard=s.new_keyboard, notify=s.notify)


@dataclass(frozen=True)
class Identity:
    vendor: int
    product: int
    serial: str | None = None
    port: str = ""
    manufacturer: str | None = None
    product_name: str | None = None

    @property
    def id(self) -> str:
        return f"{self.vendor:04x}:{self.product:04x}"


class InterfaceVerdict(NamedTuple):
    config: int
    number: int
    classes: tuple[str, ...]  # one cc:ss:pp per alternate setting, deduplicated
    verdict: str  # allow | block
    rule: str

    def as_event(self) -> dict[str, Any]:
        return {"config": self.config, "number": self.number, "class": ",".join(self.classes),
                "verdict": self.verdict, "rule": self.rule}


@dataclass(frozen=True)
class Decision:
    verdict: str  # allowed | blocked | partial
    rule: str  # the rule that decided: usb.device[...], usb.block[...], usb.allow[...], default
    interfaces: tuple[InterfaceVerdict, ...] = ()
    new_keyboard: bool = False  # a keyboard while another one is present
    reason: str = ""

    @property
    def allowed_interfaces(self) -> frozenset[tuple[int, int]]:
        return frozenset((i.config, i.number) for i in self.interfaces if i.verdict == "allow")

    @property
    def blocked_interfaces(self) -> tuple[InterfaceVerdict, ...]:
        return tuple(i for i in self.interfaces if i.verdict == "block")


DEFAULT_RULE = "default"
NEW_KEYBOARD_RULE = "usb.new_keyboard"


def _device_rule(rules: Iterable[UsbDeviceRule], ident: Identity) -> UsbDeviceRule | None:
    """The most specific matching ``[[usb.device]]`` entry: serial and port narrow a rule,
    so a rule naming them wins over one that does not, whatever their order in the file."""
    vid, pid = f"{ident.vendor:04x}", f"{ident.product:04x}"
    best: tuple[int, int] | None = None
    found: UsbDeviceRule | None = None
    for index, r in enumerate(rules):
        if r.vendor != vid or r.product != pid:
            continue
        if r.serial is not None and r.serial != ident.serial:
            continue
        if r.port is not None and r.port != ident.port:
            continue
        rank = (-((r.serial is not None) + (r.port is not None)), index)
        if best is None or rank < best:
            best, found = rank, r
    return found


def _judge(rules: UsbRules, i: Interface) -> tuple[str, str]:
    key = (i.cls, i.subclass, i.protocol)
    hit = rules._judged.get(key)
    if hit is None:
        hit = rules._judged[key] = _judge_uncached(rules, i)
    return hit


def _judge_uncached(rules: UsbRules, i: Interface) -> tuple[str, str]:
    for p in rules.block:
        if p.matches(i.cls, i.subclass, i.protocol):
            return "block", f"usb.block[{p.text}]"
    for p in rules.allow:
        if p.matches(i.cls, i.subclass, i.protocol):
            return "allow", f"usb.allow[{p.text}]"
    return rules.default, DEFAULT_RULE


def _group(desc: Descriptors) -> dict[tuple[int, int], list[Interface]]:
    out: dict[tuple[int, int], list[Interface]] = {}
    for i in desc.interfaces:
        out.setdefault((i.config, i.number), []).append(i)
    return out


WHOLE_DEVICE_KINDS = ("phone", "network")


def evaluate(rules: UsbRules, ident: Identity, desc: Descriptors, *,
             keyboard_present: bool = False,
             recognition: Recognition | None = None) -> Decision:
    """Decide a device: device rules first, then every interface (block > allow > default).

    An interface with alternate settings is allowed only if every setting is. The device
    is ``allowed`` when every interface is, ``blocked`` when none is, else ``partial``.
    A phone or network device with any blocked interface is blocked whole: an iPhone's
    audio configuration must not make the phone itself welcome at the desk (charging,
    and a configuration switch away from its blocked interfaces).
    """
    groups = _group(desc)
    dev_rule = _device_rule(rules.devices, ident) if rules.devices else None
    if dev_rule is not None:
        verdict = dev_rule.verdict
        ivs = tuple(InterfaceVerdict(cfg, num, _classes(alts), verdict, dev_rule.name)
                    for (cfg, num), alts in groups.items())
        return Decision("allowed" if verdict == "allow" else "blocked", dev_rule.name, ivs)
    ivs_list: list[InterfaceVerdict] = []
    for (cfg, num), alts in groups.items():
        verdict, rule = "allow", ""
        for alt in alts:
            v, r = _judge(rules, alt)
            if not rule:
                rule = r
            if v == "block":
                verdict, rule = "block", r
                break
        ivs_list.append(InterfaceVerdict(cfg, num, _classes(alts), verdict, rule))
    ivs = tuple(ivs_list)
    blocked = [i for i in ivs if i.verdict == "block"]
    if not ivs:  # nothing to judge: the default decides
        verdict = "allowed" if rules.default == "allow" else "blocked"
        return Decision(verdict, DEFAULT_RULE, (), reason="the device has no interfaces")
    if not blocked:
        decision = Decision("allowed", ivs[0].rule, ivs)
    elif len(blocked) == len(ivs):
        decision = Decision("blocked", blocked[0].rule, ivs)
    elif recognition is not None and recognition.kind in WHOLE_DEVICE_KINDS:
        decision = Decision("blocked", blocked[0].rule, ivs,
                            reason=f"a {recognition.kind} device with blocked interfaces "
                                   "is blocked whole")
    else:
        decision = Decision("partial", blocked[0].rule, ivs)
    if keyboard_present and decision.verdict != "blocked" and has_boot_keyboard(desc):
        if rules.new_keyboard == "block":
            return Decision("blocked", NEW_KEYBOARD_RULE,
                            tuple(InterfaceVerdict(i.config, i.number, i.classes, "block",
                                                   NEW_KEYBOARD_RULE) for i in ivs),
                            new_keyboard=True,
                            reason="a new keyboard while another one is present")
        if rules.new_keyboard == "warn":
            return Decision(decision.verdict, decision.rule, decision.interfaces,
                            new_keyboard=True,
                            reason="a new keyboard while another one is present")
    return decision


def has_boot_keyboard(desc: Descriptors) -> bool:
    """Whether any interface is a HID boot keyboard (03:01:01), what ``new_keyboard``
    judges."""
    return any(i.cls == 0x03 and i.subclass == 0x01 and i.protocol == 0x01
               for i in desc.interfaces)


def _classes(alts: list[Interface]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for a in alts:
        seen.setdefault(a.triple)
    return tuple(seen)

