"""The leak controls' pure decisions, on plain data."""

from __future__ import annotations

import ipaddress

import pytest

from floorguard.agent.adapters.mountinfo import Mount, parse_mountinfo
from floorguard.agent.controls.files.rules import (
    containing,
    flag_match,
    glob_scaffold,
    judge_mount,
    mount_class,
)
from floorguard.agent.controls.network.control import parse_proc_net_tcp
from floorguard.agent.controls.network.rules import egress_allowed, interface_allowed, outbound
from floorguard.agent.controls.processes.rules import forbidden, scan_plan
from floorguard.policy import EgressRule, PolicyError, ProcessesSettings, load_policy, parse_policy
from tests.rigs.processes import REPO

MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
61 27 0:50 / /home/alice/my\\040share rw - fuse.sshfs alice@nas:/exports rw
62 27 0:51 / /srv/nfs rw - nfs4 nas:/srv rw
63 27 8:17 / /media/alice/STICK rw - vfat /dev/sdb1 rw
64 27 0:52 / /run/user/1000/doc rw - fuse.portal portal rw
65 27 0:53 / /mnt/scratch rw - tmpfs tmpfs rw
66 27 0:54 / /var/tmp/ram rw - tmpfs tmpfs rw
67 27 0:55 / /sys/fs/fuse/connections rw - fusectl fusectl rw
this line is not mountinfo
"""


def _by_point() -> dict[str, Mount]:
    return {m.point: m for m in parse_mountinfo(MOUNTINFO)}


def test_mountinfo_lines_are_parsed_and_unescaped_and_junk_is_skipped() -> None:
    mounts = _by_point()
    assert len(mounts) == 8
    share = mounts["/home/alice/my share"]
    assert (share.fstype, share.source, share.device) == ("fuse.sshfs", "alice@nas:/exports",
                                                          "0:50")


@pytest.mark.parametrize(("point", "cls"), [
    ("/", "block"),
    ("/home/alice/my share", "network"),
    ("/srv/nfs", "network"),
    ("/media/alice/STICK", "removable"),
    ("/run/user/1000/doc", "fuse"),
    ("/mnt/scratch", "removable-root"),
    ("/var/tmp/ram", None),
    ("/sys/fs/fuse/connections", None),
])
def test_mounts_are_classified_by_how_data_could_leave_through_them(point: str,
                                                                    cls: str | None) -> None:
    removable = {"8:17"}
    m = _by_point()[point]
    assert mount_class(m, ("/media", "/mnt"), lambda dev: dev in removable) == cls


def test_present_mounts_spare_fixed_disks_new_ones_do_not_and_approved_never_count() -> None:
    mounts = _by_point()
    root, doc, nfs = mounts["/"], mounts["/run/user/1000/doc"], mounts["/srv/nfs"]
    assert not judge_mount(root, "block", present_at_start=True, approved=())
    assert judge_mount(root, "block", present_at_start=False, approved=())
    assert judge_mount(nfs, "network", present_at_start=True, approved=())
    assert not judge_mount(doc, "fuse", present_at_start=False, approved=("/run/user/*/doc",))
    assert not judge_mount(nfs, "network", present_at_start=False, approved=("/srv",))
    assert judge_mount(nfs, "network", present_at_start=False, approved=("/srv/nf",))
    assert not judge_mount(mounts["/var/tmp/ram"], None, present_at_start=False, approved=())


def test_watch_globs_are_followed_through_the_folders_on_their_way() -> None:
    assert glob_scaffold("/home/*/Desktop") == ["/home", "/home/*"]
    assert glob_scaffold("/home/*/Documents/exports") == ["/home", "/home/*",
                                                          "/home/*/Documents"]
    assert glob_scaffold("/srv/exports") == ["/srv"]
    assert glob_scaffold("/*") == []  # never "/" itself


def test_flag_patterns_match_file_names_ignoring_case() -> None:
    assert flag_match("Customers.CSV", ("*.xlsx", "*.csv")) == "*.csv"
    assert flag_match("notes.txt", ("*.csv",)) is None
    roots = frozenset({"/media", "/media/alice/STICK"})
    assert containing("/media/alice/STICK/a.txt", roots) == "/media/alice/STICK"
    assert containing("/media/x", roots) == "/media"
    assert containing("/mediation/x", roots) is None


RULES = ProcessesSettings(forbid=("obs", "dropbox*"), forbid_paths=("/opt/rec/*",),
                     forbid_sha256=frozenset({"ab" * 32}))


def test_programs_are_forbidden_by_name_executable_path_or_hash() -> None:
    assert forbidden("obs", "/usr/bin/obs", RULES, None) == 'name "obs"'
    # the process renamed itself, its executable still says what it is
    assert forbidden("innocent", "/usr/bin/obs", RULES, None) == 'name "obs"'
    assert forbidden("dropbox-lnx", "/x/y", RULES, None) == 'name "dropbox*"'
    assert forbidden("rec", "/opt/rec/bin/rec", RULES, None) == 'path "/opt/rec/*"'
    assert forbidden("calc", "/tmp/calc", RULES, "ab" * 32) == f"sha256 {'ab' * 32}"
    assert forbidden("calc", "/tmp/calc", RULES, "cd" * 32) is None
    assert forbidden("obsidian", "/usr/bin/obsidian", RULES, None) is None


def test_scans_look_at_new_and_young_pids_and_at_everything_when_a_full_scan_is_due() -> None:
    pids = {1, 2, 3, 10}
    todo, full = scan_plan(100.0, pids, set(), {}, None, 30.0)
    assert (todo, full) == (pids, True)
    todo, full = scan_plan(101.0, pids | {11}, pids, {10: 99.0, 3: 10.0}, 100.0, 30.0)
    assert (todo, full) == ({10, 11}, False)  # 11 is new, 10 is young, 3 is old
    todo, full = scan_plan(130.0, pids, pids, {}, 100.0, 30.0)
    assert full and todo == pids


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1
   1: 0100007F:D431 0100007F:270F 01 00000000:00000000 00:00000000 00000000  1000        0 101 1
   2: 0100007F:1F90 0100007F:D432 01 00000000:00000000 00:00000000 00000000     0        0 102 1
   3: 0100007F:D433 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 103 1
   broken row
"""
# /proc/net/tcp6 rows are wide: header, then local, remote, state, ..., uid, timeout, inode
TCP6 = "\n".join([
    "  sl  local_address remote_address st tx rx tr tm retr uid timeout inode",
    "   0: 00000000000000000000000001000000:D434 B80D0120000000000000000001000000:01BB"
    " 01 0:0 0:0 0 0 1000 0 200 1",
    "   1: 0000000000000000FFFF00000100007F:D435 0000000000000000FFFF00000A00000A:01BB"
    " 01 0:0 0:0 0 0 1000 0 201 1",
])


def test_kernel_connection_tables_are_parsed_for_both_address_families() -> None:
    v4 = parse_proc_net_tcp(TCP)
    assert len(v4) == 4
    assert (str(v4[1].local), v4[1].lport, str(v4[1].remote), v4[1].rport, v4[1].uid,
            v4[1].inode) == ("127.0.0.1", 0xD431, "127.0.0.1", 9999, 1000, 101)
    v6 = parse_proc_net_tcp(TCP6)
    assert str(v6[0].remote) == "2001:db8::1"
    assert str(v6[0].local) == "::1"
    assert str(v6[1].remote) == "10.0.0.10"  # v4-mapped is judged as v4


def test_only_outbound_established_connections_are_egress() -> None:
    out = outbound(parse_proc_net_tcp(TCP))
    # row 2 is the accepted end of a connection to our listening port 8080
    assert sorted(s.inode for s in out) == [101, 103]


def test_egress_is_allowed_by_network_and_port() -> None:
    rules = (EgressRule(net="10.0.0.0/8", ports=(443,)), EgressRule(net="127.0.0.1/32"),
             EgressRule(net="2001:db8::/32", ports=(443, 8443)))
    ip = ipaddress.ip_address
    assert egress_allowed(ip("10.1.2.3"), 443, rules)
    assert not egress_allowed(ip("10.1.2.3"), 80, rules)
    assert egress_allowed(ip("127.0.0.1"), 9999, rules)
    assert egress_allowed(ip("2001:db8::5"), 8443, rules)
    assert not egress_allowed(ip("192.0.2.1"), 443, rules)
    assert not egress_allowed(ip("::1"), 443, rules)


def test_interfaces_are_allowed_by_glob() -> None:
    assert interface_allowed("eth0", ("lo", "eth*"))
    assert not interface_allowed("wlan0", ("lo", "eth*"))
    assert not interface_allowed("usb0", ("lo",))


def test_the_files_table_takes_absolute_globs_and_file_name_patterns() -> None:
    ok = parse_policy('[files]\nwatch = ["/home/*/Desktop"]\nflag = ["*.csv"]\n'
                      'approved_mounts = ["/run/user/*/doc"]\n')
    assert ok.get("files")["approved_mounts"] == ("/run/user/*/doc",)
    with pytest.raises(PolicyError) as bad:
        parse_policy('[files]\nwatch = ["Desktop"]\nflag = ["exports/*.csv"]\n', "p.toml")
    text = str(bad.value)
    assert 'p.toml:2: files.watch: expected an absolute path or glob' in text
    assert "p.toml:3: files.flag:" in text and "file names only" in text


CORPUS = REPO / "tests" / "policies"


def test_the_leak_corpus_good_file_converts_its_rules() -> None:
    policy = load_policy(CORPUS / "good" / "leaks.toml")
    assert policy.get("network")["egress"][0] == EgressRule(net="10.20.0.0/16", ports=(443,),
                                                            note="the CRM")
    assert policy.get("processes")["forbid_sha256"][0].islower()
