"""Floor memberships: set by an admin on the command line, they limit what SVs (and
auditors with floors) read and do, duty included, on both stores. The route-by-route
cross-floor matrix is in test_authz_matrix.py."""

from __future__ import annotations

import sqlalchemy as sa

from floorguard.console.console_events import record_console_event
from floorguard.console.store.schema import sv_duty
from tests.console.kit import Site, unique
from tests.rigs.processes import PASSWORD, floorguard


def cli(site: Site, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    res = floorguard("console", "--db", site.db_url, "user", *args, input=stdin)
    return res.returncode, res.stdout, res.stderr


def test_admin_sets_floors_on_the_command_line(site: Site) -> None:
    name, f1, f2 = unique("sv"), unique("F1"), unique("F2")
    rc, out, err = cli(site, "add", name, "--role", "sv", "--floor", f1, "--floor",
                       f"{f2}, {f1}", stdin=PASSWORD + "\n")
    assert rc == 0, err
    assert cli(site, "floors", name)[1] == f"{name}\tsv\t{','.join(sorted((f1, f2)))}\n"
    rc, out, err = cli(site, "floors", name, "--set", f2)
    assert (rc, out) == (0, f"{name}\tsv\t{f2}\n"), err
    listed = [line.split("\t") for line in cli(site, "list")[1].splitlines()]
    assert [name, "sv", "active", f2] in listed
    assert cli(site, "floors", name, "--set", "")[1] == f"{name}\tsv\tno floors\n"
    auditor = unique("aud")
    assert cli(site, "add", auditor, "--role", "auditor", stdin=PASSWORD + "\n")[0] == 0
    assert cli(site, "floors", auditor)[1] == f"{auditor}\tauditor\tall floors\n"
    rc, _, err = cli(site, "floors", unique("nobody"), "--set", f1)
    assert rc == 1 and "no user" in err and "user list" in err
    rc, _, err = cli(site, "floors", name, "--set", "a\tb")
    assert rc == 1 and "a floor name is 1-255 printable characters" in err


def test_an_sv_goes_on_duty_only_for_their_floors_and_off_when_removed(site: Site) -> None:
    name, mine, theirs = unique("sv"), unique("dutyF"), unique("otherF")
    site.add_user(name, "sv", floors=(mine,))
    client = site.login(name)
    token = site.csrf(client)
    refused = client.post("/duty", data={"action": "on", "floor": theirs, "csrf": token})
    assert refused.status_code == 403 and "not one of your floors" in refused.text
    ok = client.post("/duty", data={"action": "on", "floor": mine, "csrf": token})
    assert ok.status_code == 303
    page = client.get("/floor").text
    assert f"You are on duty for {mine}." in page and theirs not in page

    def open_stints() -> list[str]:
        return [r.floor for r in site.rows(sa.select(sv_duty.c.floor).where(
            sv_duty.c.user_name == name, sv_duty.c.off_us.is_(None)))]

    assert open_stints() == [mine]
    assert cli(site, "floors", name, "--set", theirs)[0] == 0
    assert open_stints() == []  # duty is only for one's own floors


def test_an_sv_without_floors_sees_no_seat_and_acts_nowhere(site: Site) -> None:
    name = unique("sv")
    site.add_user(name, "sv")
    seat = site.seat(unique("F"), unique("S"))
    seat.event("usb.blocked", "violation", user="op9")
    client = site.login(name)
    for path in ("/floor", "/violations", "/events", "/agents", "/coverage"):
        page = client.get(path)
        assert page.status_code == 200 and seat.seat not in page.text, path
    assert client.get(f"/seats/{seat.agent_id}").status_code == 403
    lock = client.post(f"/agents/{seat.agent_id}/lock", data={"csrf": site.csrf(client)})
    assert lock.status_code == 403


def test_console_made_events_are_shown_by_the_floor_they_are_about(site: Site) -> None:
    mine, theirs = unique("mineF"), unique("theirsF")
    name = site.add_user(unique("sv"), "sv", floors=(mine,))
    own, other = site.seat(mine, unique("S"), staff=()), site.seat(theirs, unique("S"), staff=())
    with site.engine.begin() as conn:
        silent_own = record_console_event(conn, "agent.silent", "violation",
                                          {"agent": own.agent_id}, seat=own.seat)
        silent_other = record_console_event(conn, "agent.silent", "violation",
                                            {"agent": other.agent_id}, seat=other.seat)
        ratio_other = record_console_event(conn, "floor.sv_ratio_exceeded", "violation",
                                           {"floor": theirs, "operators": 30})
        ratio_own = record_console_event(conn, "floor.sv_ratio_exceeded", "violation",
                                         {"floor": mine, "operators": 30})
    client = site.login(name)
    text = client.get("/violations", params={"kind": "agent.silent"}).text
    assert own.seat in text and other.seat not in text
    for ev, allowed in ((silent_own, True), (ratio_own, True), (silent_other, False),
                        (ratio_other, False)):
        resp = client.get(f"/violations/console/{ev['seq']}")
        assert resp.status_code == (200 if allowed else 403), (ev["kind"], ev["details"])
    ack = client.post(f"/violations/console/{ratio_other['seq']}/ack",
                      data={"comment": "not mine", "csrf": site.csrf(client)})
    assert ack.status_code == 403
