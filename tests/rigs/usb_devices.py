"""Device descriptions for the umockdev tests, with real descriptor bytes.

Each entry is the sysfs view of one USB device as the kernel shows it before it is
authorized: the identity attributes, the binary ``descriptors`` attribute (the device
descriptor followed by every configuration with its interface, endpoint, interface
association and class-specific descriptors) and the interfaces of the configuration the
kernel would choose, each still unauthorized. ``umockdev_text`` turns one into the
``.umockdev`` format (``P:`` path, ``E:`` property, ``A:`` attribute, ``H:`` binary
attribute in hex) at a given port.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT_HUB = """P: /devices/usb1
E: SUBSYSTEM=usb
E: DEVTYPE=usb_device
E: BUSNUM=001
E: DEVNUM=001
A: idVendor=1d6b
A: idProduct=0002
A: bDeviceClass=09
A: busnum=1
A: devnum=1
A: authorized=1
A: authorized_default=1
A: interface_authorized_default=1
"""


@dataclass(frozen=True)
class UsbDevice:
    vendor: str
    product: str
    manufacturer: str | None
    product_name: str | None
    serial: str | None
    device_class: str
    descriptors: str
    # (configuration, number, class, subclass, protocol[, interface string])
    interfaces: tuple[tuple[object, ...], ...]


def umockdev_text(dev: UsbDevice, port: str, devnum: int = 5, parent: str = "/devices/usb1",
                  authorized: str = "0") -> str:
    """The device at ``parent/port`` with its interfaces, in the .umockdev format."""
    path = f"{parent}/{port}"
    lines = [f"P: {path}", "E: SUBSYSTEM=usb", "E: DEVTYPE=usb_device", "E: BUSNUM=001",
             f"E: DEVNUM={devnum:03d}", f"A: idVendor={dev.vendor}", f"A: idProduct={dev.product}",
             f"A: bDeviceClass={dev.device_class}", "A: busnum=1", f"A: devnum={devnum}",
             f"A: authorized={authorized}"]
    for attr, value in (("manufacturer", dev.manufacturer), ("product", dev.product_name),
                        ("serial", dev.serial)):
        if value is not None:
            lines.append(f"A: {attr}={value}")
    lines.append(f"H: descriptors={dev.descriptors}")
    text = "\n".join(lines) + "\n"
    for cfg, num, c, s, p, *name in dev.interfaces:
        ipath = f"{path}/{port}:{cfg}.{num}"
        block = [f"P: {ipath}", "E: SUBSYSTEM=usb", "E: DEVTYPE=usb_interface",
                 f"A: bInterfaceNumber={int(str(num)):02x}", f"A: bInterfaceClass={c}",
                 f"A: bInterfaceSubClass={s}", f"A: bInterfaceProtocol={p}",
                 f"A: authorized={authorized}"]
        if name:
            block.append(f"A: interface={name[0]}")
        text += "\n" + "\n".join(block) + "\n"
    return text

# SanDisk Cruzer Blade USB flash drive: one mass-storage interface (08:06:50, SCSI, bulk-only).
FLASH_DRIVE = UsbDevice(
    vendor='0781', product='5567', manufacturer='SanDisk',
    product_name='Cruzer Blade', serial='4C530001230315112345', device_class='00',
    descriptors=(
        "120100020000004081076755000101020301090220000101008064090400000208065000"
        "0705810200020007050202000200"
    ),
    interfaces=((1, 0, '08', '06', '50'),),
)

# Logitech H390 USB headset: audio control, speaker and microphone streaming (each with a zero-
# bandwidth alternate setting), and a HID interface for the volume buttons.
HEADSET = UsbDevice(
    vendor='046d', product='0a44', manufacturer='Logitech',
    product_name='Logitech USB Headset', serial=None, device_class='00',
    descriptors=(
        "12010002000000406d04440a0001010200010902b2000401008032090400000001010000"
        "0a2401000128000201020c24020101010002030000000924030201030001000904010000"
        "01020000090401010101020000072401010101000b2402010202100180bb0009050109c0"
        "000100000725010100000009040200000102000009040201010102000007240104010100"
        "0b2402010102100180bb0009058205600001000007250101000000090403000103000000"
        "0921110100012232000705830308000a"
    ),
    interfaces=(
        (1, 0, '01', '01', '00'),
        (1, 1, '01', '02', '00'),
        (1, 2, '01', '02', '00'),
        (1, 3, '03', '00', '00'),
    ),
)

# A headset with the same audio and HID interfaces plus a mass-storage interface (the 'driver
# CD' or firmware disk some headsets expose).
HEADSET_STORAGE = UsbDevice(
    vendor='047f', product='c056', manufacturer='Plantronics',
    product_name='Blackwire 3220 Series', serial='D1CEC32927974D5F9C0B6A4A3F1A9A5C',
    device_class='00',
    descriptors=(
        "12010002000000407f0456c00001010203010902c90005010080fa090400000001010000"
        "0a2401000128000201020c24020101010002030000000924030201030001000904010000"
        "01020000090401010101020000072401010101000b2402010202100180bb0009050109c0"
        "000100000725010100000009040200000102000009040201010102000007240104010100"
        "0b2402010102100180bb0009058205600001000007250101000000090403000103000000"
        "0921110100012232000705830308000a0904040002080650000705840240000007050502"
        "400000"
    ),
    interfaces=(
        (1, 0, '01', '01', '00'),
        (1, 1, '01', '02', '00'),
        (1, 2, '01', '02', '00'),
        (1, 3, '03', '00', '00'),
        (1, 4, '08', '06', '50'),
    ),
)

# Google Pixel in file-transfer (MTP) mode: one vendor-specific interface named "MTP" with bulk
# in, bulk out and interrupt in endpoints.
ANDROID_MTP = UsbDevice(
    vendor='18d1', product='4ee1', manufacturer='Google',
    product_name='Pixel 7', serial='28061FDH2000QN', device_class='00',
    descriptors=(
        "1201000200000040d118e14e4004010203010902270001010080fa0904000003ffff0005"
        "0705810200020007050102000200070582031c0006"
    ),
    interfaces=((1, 0, 'ff', 'ff', '00', 'MTP'),),
)

# Google Pixel tethering over RNDIS with USB debugging on: an interface association (e0:01:03)
# over the RNDIS control interface and its CDC data interface, plus ADB (ff:42:01).
ANDROID_RNDIS = UsbDevice(
    vendor='18d1', product='4ee4', manufacturer='Google',
    product_name='Pixel 7', serial='28061FDH2000QN', device_class='ef',
    descriptors=(
        "12010002ef020140d118e44e4004010203010902620003010080fa080b0002e001030009"
        "04000001e001030505240010010524010001042402000524060001070582030800090904"
        "0100020a00000607058102000200070501020002000904020002ff420107070583020002"
        "0007050202000200"
    ),
    interfaces=(
        (1, 0, 'e0', '01', '03'),
        (1, 1, '0a', '00', '00'),
        (1, 2, 'ff', '42', '01'),
    ),
)

# iPhone: four configurations: PTP; iPod audio and HID; PTP and usbmux (ff:fe:02); PTP, usbmux
# and Apple USB Ethernet (ff:fd:01). The kernel configures the first.
IPHONE = UsbDevice(
    vendor='05ac', product='12a8', manufacturer='Apple Inc.',
    product_name='iPhone', serial='00008110001A2B3C0E91801E', device_class='00',
    descriptors=(
        "1201000200000040ac05a81201110102030409022700010100c0fa090400000306010107"
        "07058102000200070502020002000705830340000909025000030200c0fa090400000001"
        "0100000a24010001280002010209040100000102000009040101010102000009058105c0"
        "00010000090402000103000000092111010001222f000705830340000109023e00020300"
        "c0fa09040000030601010707058102000200070502020002000705830340000909040100"
        "02fffe0208070504020002000705850200020009025e00030400c0fa0904000003060101"
        "070705810200020007050202000200070583034000090904010002fffe02080705040200"
        "0200070585020002000904020000fffd01090904020102fffd0109070506020002000705"
        "8702000200"
    ),
    interfaces=((1, 0, '06', '01', '01'),),
)

# Realtek RTL8153 USB-Ethernet adapter: configuration 1 vendor-specific (the r8152 driver),
# configuration 2 CDC ECM control and data.
USB_ETHERNET = UsbDevice(
    vendor='0bda', product='8153', manufacturer='Realtek',
    product_name='USB 10/100/1000 LAN', serial='000001', device_class='00',
    descriptors=(
        "1201100200000040da0b538100300102030209022700010100a05a0904000003ffff0000"
        "07058102000200070502020002000705830302000809025000020200a05a090400000102"
        "060005052400100105240600010d240f0300000000ea0500000007058303100008090401"
        "00000a00000009040101020a0000000705810200020007050202000200"
    ),
    interfaces=((1, 0, 'ff', 'ff', '00'),),
)

# Dell KB216 keyboard: a boot keyboard interface (03:01:01) and a consumer-control HID interface.
KEYBOARD = UsbDevice(
    vendor='413c', product='2113', manufacturer='Dell',
    product_name='Dell KB216 Wired Keyboard', serial=None, device_class='00',
    descriptors=(
        "12011001000000403c41132108010102000109023b00020100a032090400000103010100"
        "0921110100012241000705810308000a0904010001030000000921110100012253000705"
        "820308000a"
    ),
    interfaces=((1, 0, '03', '01', '01'), (1, 1, '03', '00', '00')),
)

# Logitech Unifying receiver (wireless keyboard and mouse): boot keyboard, boot mouse and a
# vendor HID interface.
RECEIVER = UsbDevice(
    vendor='046d', product='c52b', manufacturer='Logitech',
    product_name='USB Receiver', serial=None, device_class='00',
    descriptors=(
        "12010002000000406d042bc511120102000109025400030100a031090400000103010100"
        "092111010001223b00070581030800080904010001030102000921110100012294000705"
        "820308000209040200010300000009211101000122620007058303200002"
    ),
    interfaces=(
        (1, 0, '03', '01', '01'),
        (1, 1, '03', '01', '02'),
        (1, 2, '03', '00', '00'),
    ),
)

# Genesys Logic USB 2.0 hub (device class 09, one hub interface).
HUB = UsbDevice(
    vendor='05e3', product='0608', manufacturer=None,
    product_name='USB2.0 Hub', serial=None, device_class='09',
    descriptors=(
        "1201000209000140e305080660600001000109021900010100e032090400000109000000"
        "0705810301000c"
    ),
    interfaces=((1, 0, '09', '00', '00'),),
)

# Kingston DataTraveler stick, plugged behind the hub.
HUB_DRIVE = UsbDevice(
    vendor='0951', product='1666', manufacturer='Kingston',
    product_name='DataTraveler 3.0', serial='E0D55EA574B8F3A0B9620F3A', device_class='00',
    descriptors=(
        "120100020000004051096616100101020301090220000101008096090400000208065000"
        "0705810200020007050202000200"
    ),
    interfaces=((1, 0, '08', '06', '50'),),
)

# A flash drive whose configuration descriptor claims 32 bytes but whose descriptors stop after
# 23 (a broken or malicious device).
TRUNCATED = UsbDevice(
    vendor='0781', product='5567', manufacturer='SanDisk',
    product_name='Cruzer Blade', serial='4C530001230315199999', device_class='00',
    descriptors=(
        "120100020000004081076755000101020301090220000101008064090400000208065000"
        "0705810200"
    ),
    interfaces=(),
)

DEVICES = {
    "flash_drive": FLASH_DRIVE,
    "headset": HEADSET,
    "headset_storage": HEADSET_STORAGE,
    "android_mtp": ANDROID_MTP,
    "android_rndis": ANDROID_RNDIS,
    "iphone": IPHONE,
    "usb_ethernet": USB_ETHERNET,
    "keyboard": KEYBOARD,
    "receiver": RECEIVER,
    "hub": HUB,
    "hub_drive": HUB_DRIVE,
    "truncated": TRUNCATED,
}
