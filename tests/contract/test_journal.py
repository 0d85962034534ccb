"""The journal: a hash chain that shows any altered, removed or reordered record, and
durability that survives SIGKILL at any point."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floorguard.events import GENESIS, record_hash, verify_chain
from floorguard.journal import Entry, Journal, JournalError, JournalReader
from floorguard.osbytes import unescape
from tests.rigs.processes import REPO, base_env, floorguard

N = 10
FIELDS = {"agent": "0a0a0a0a-0000-4000-8000-000000000001", "host": "pc-17", "seat": "T-01",
          "user": "alice", "control": "usb", "policy": "ab" * 32}


def fields(kind: str = "usb.blocked", severity: str = "violation", **details: Any
           ) -> dict[str, Any]:
    return {**FIELDS, "kind": kind, "severity": severity, "details": details}


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    """A closed journal of N records, seq 1..N."""
    state = tmp_path / "state"
    clock = iter(1_790_000_000.0 + i for i in range(1000))
    with Journal(state, clock=lambda: next(clock), group_window=0.05) as j:
        tickets = [j.append(fields("usb.blocked", "info", n=i, dev="0781:5583"))
                   for i in range(1, N + 1)]
        for t in tickets:
            t.wait()
    return state


def db(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(state / "journal.db", isolation_level=None)


def cli_verify(state: Path) -> tuple[int, str]:
    res = floorguard("verify", "--state-dir", str(state))
    return res.returncode, res.stdout + res.stderr


def test_chain_verifies(journal_dir: Path) -> None:
    with JournalReader(journal_dir) as r:
        assert r.verify() == (None, "intact")
        recs = list(r.records())
    assert [x["seq"] for x in recs] == list(range(1, N + 1))
    assert recs[0]["prev"] == GENESIS
    for a, b in itertools.pairwise(recs):
        assert b["prev"] == a["hash"] == record_hash(a)
    assert recs[0]["ts"] == "2026-09-21T14:13:20.000000Z"  # from the injected clock
    assert cli_verify(journal_dir) == (0, f"journal intact: {N} records, chain verified\n")


def test_ids_are_time_ordered_and_unique(journal_dir: Path) -> None:
    with JournalReader(journal_dir) as r:
        ids = [x["id"] for x in r.records()]
    assert ids == sorted(ids) and len(set(ids)) == N
    assert all(i[14] == "7" for i in ids)  # UUIDv7


FIELD_CHANGES = [("kind", "usb.allowed"), ("severity", "warning"), ("seat", "T-02"),
                 ("user", "mallory"), ("details", {"n": 0}), ("ts", "2026-01-01T00:00:00Z"),
                 ("id", "00000000-0000-7000-8000-000000000000"), ("policy", "0" * 64),
                 ("agent", "someone-else"), ("host", "pc-99"), ("control", "idle"),
                 ("prev", "f" * 64)]


@pytest.mark.parametrize("pos", [1, 5, N])
def test_altering_any_field_is_caught_at_that_seq(journal_dir: Path, pos: int) -> None:
    with db(journal_dir) as conn:
        original = conn.execute("SELECT record FROM journal WHERE seq = ?", (pos,)).fetchone()[0]
    for name, value in FIELD_CHANGES:
        with db(journal_dir) as conn:
            conn.execute("UPDATE journal SET record = json_set(record, ?, json(?)) "
                         "WHERE seq = ?", (f"$.{name}", json.dumps(value), pos))
        with JournalReader(journal_dir) as r:
            bad, why = r.verify()
        assert bad == pos, (name, why)
        with db(journal_dir) as conn:
            conn.execute("UPDATE journal SET record = ? WHERE seq = ?", (original, pos))
    rc, out = cli_verify(journal_dir)
    assert rc == 0, out  # restored: intact again, so each check above was of one change


@pytest.mark.parametrize("pos", [1, 4, N])
def test_cli_names_the_altered_seq(journal_dir: Path, pos: int) -> None:
    with db(journal_dir) as conn:
        conn.execute("UPDATE journal SET record = json_set(record, '$.user', 'bob') "
                     "WHERE seq = ?", (pos,))
    assert cli_verify(journal_dir) == (1, f"journal broken at seq {pos}: hash does not match "
                                          "the record's content\n")


@pytest.mark.parametrize("column", ["kind", "severity", "ts", "hash", "id"])
def test_altering_an_indexed_column_is_caught(journal_dir: Path, column: str) -> None:
    with db(journal_dir) as conn:
        conn.execute(f"UPDATE journal SET {column} = 'x' WHERE seq = 6")  # noqa: S608
    rc, out = cli_verify(journal_dir)
    assert (rc, out.split(":")[0]) == (1, "journal broken at seq 6")


@pytest.mark.parametrize("pos", [1, 5, N])
def test_deleting_a_record_is_caught_at_that_seq(journal_dir: Path, pos: int) -> None:
    with db(journal_dir) as conn:
        conn.execute("DELETE FROM journal WHERE seq = ?", (pos,))
    rc, out = cli_verify(journal_dir)
    assert rc == 1 and out.startswith(f"journal broken at seq {pos}:"), out


def test_deleting_the_tail_is_caught(journal_dir: Path) -> None:
    with db(journal_dir) as conn:
        conn.execute("DELETE FROM journal WHERE seq > 7")
    rc, out = cli_verify(journal_dir)
    assert (rc, out) == (1, f"journal broken at seq 8: records 8 to {N} were written but "
                            "are missing\n")


def test_rewriting_the_last_record_with_a_valid_hash_is_caught(journal_dir: Path) -> None:
    with db(journal_dir) as conn:
        rec = json.loads(conn.execute("SELECT record FROM journal WHERE seq = ?",
                                      (N,)).fetchone()[0])
        rec["details"] = {"n": N, "dev": "nothing to see"}
        rec["hash"] = record_hash(rec)
        conn.execute("UPDATE journal SET record = ?, hash = ? WHERE seq = ?",
                     (json.dumps(rec), rec["hash"], N))
    rc, out = cli_verify(journal_dir)
    assert (rc, out.split(":")[0]) == (1, f"journal broken at seq {N}")


@pytest.mark.parametrize(("a", "b"), [(1, 2), (3, 7), (N - 1, N)])
def test_swapping_two_records_is_caught_at_the_first(journal_dir: Path, a: int, b: int) -> None:
    cols = "id, ts, severity, kind, record, hash"
    with db(journal_dir) as conn:
        ra = conn.execute(f"SELECT {cols} FROM journal WHERE seq = ?", (a,)).fetchone()  # noqa: S608
        rb = conn.execute(f"SELECT {cols} FROM journal WHERE seq = ?", (b,)).fetchone()  # noqa: S608
        sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
        conn.execute(f"UPDATE journal SET {sets} WHERE seq = ?", (*rb, a))  # noqa: S608
        conn.execute(f"UPDATE journal SET {sets} WHERE seq = ?", (*ra, b))  # noqa: S608
    rc, out = cli_verify(journal_dir)
    assert (rc, out.split(":")[0]) == (1, f"journal broken at seq {a}")


def test_swapping_with_renumbered_seqs_is_caught(journal_dir: Path) -> None:
    """Even with each record's own seq rewritten to fit its new place, the chain breaks."""
    with db(journal_dir) as conn:
        recs = {s: json.loads(t) for s, t in conn.execute(
            "SELECT seq, record FROM journal WHERE seq IN (3, 4)")}
        for new_seq, rec in ((3, recs[4]), (4, recs[3])):
            rec["seq"] = new_seq
            conn.execute("UPDATE journal SET record = ?, id = ?, ts = ?, kind = ?, "
                         "severity = ?, hash = ? WHERE seq = ?",
                         (json.dumps(rec), rec["id"], rec["ts"], rec["kind"], rec["severity"],
                          rec["hash"], new_seq))
    rc, out = cli_verify(journal_dir)
    assert (rc, out.split(":")[0]) == (1, "journal broken at seq 3")


def test_info_events_share_one_commit(tmp_path: Path) -> None:
    with Journal(tmp_path, group_window=0.5) as j:
        tickets = [j.append(fields("agent.command", "info", n=i)) for i in range(200)]
        recs = [t.wait() for t in tickets]
        assert j.commits == 1
    assert [r["seq"] for r in recs] == list(range(1, 201))


def test_warnings_commit_alone_without_waiting_for_the_group(tmp_path: Path) -> None:
    with Journal(tmp_path, group_window=3600.0) as j:
        for n, severity in enumerate(["warning", "violation", "warning"], start=1):
            # returns within its timeout only if it did not wait out the hour-long window
            rec = j.record(fields("usb.blocked", severity), timeout=30)
            assert (rec["seq"], j.commits) == (n, n)


def test_a_warning_flushes_waiting_info_events_with_it(tmp_path: Path) -> None:
    with Journal(tmp_path, group_window=3600.0) as j:
        infos = [j.append(fields("agent.command", "info")) for _ in range(5)]
        j.record(fields("usb.blocked", "violation"), timeout=30)
        assert [t.wait(0)["seq"] for t in infos] == [1, 2, 3, 4, 5]


def test_an_unwritable_event_fails_its_caller_not_the_journal(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        with pytest.raises(ValueError, match="JSON"):
            j.append(fields(bad={1, 2}))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="JSON"):
            j.append(fields(ratio=float("nan")))
        with pytest.raises(ValueError, match="severity"):
            j.append(fields(severity="fatal"))
        assert j.record(fields())["seq"] == 1
        assert j.healthy()


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    with Journal(tmp_path), pytest.raises(JournalError, match="another floorguard agent"):
        Journal(tmp_path).open()


def test_events_cli_prints_oldest_first_and_filters_by_time(journal_dir: Path) -> None:
    res = floorguard("events", "--json", "--state-dir", str(journal_dir))
    assert res.returncode == 0
    seqs = [json.loads(line)["seq"] for line in res.stdout.splitlines()]
    assert seqs == list(range(1, N + 1))
    res = floorguard("events", "--json", "--since", "2026-09-21T14:13:25Z",
                     "--state-dir", str(journal_dir))
    assert [json.loads(line)["seq"] for line in res.stdout.splitlines()] == list(range(6, N + 1))
    res = floorguard("events", "--state-dir", str(journal_dir))
    assert res.stdout.splitlines()[0].split()[:4] == ["1", "2026-09-21T14:13:20.000000Z",
                                                      "info", "usb.blocked"]
    res = floorguard("events", "--since", "yesterday-ish", "--state-dir", str(journal_dir))
    assert res.returncode == 2 and "cannot read the time" in res.stderr


def test_verify_without_a_journal_says_where_it_looked(tmp_path: Path) -> None:
    rc, out = cli_verify(tmp_path / "none")
    assert rc == 1 and "no journal at" in out


# --- durability under SIGKILL ---------------------------------------------------------------

WRITER = Path(__file__).with_name("journal_writer.py")


@pytest.fixture
def writer_env() -> Iterator[dict[str, str]]:
    env = base_env()
    env["PYTHONPATH"] = f"{REPO / 'src'}:{REPO}"
    yield env


def test_sigkill_never_loses_a_durable_event(tmp_path: Path, writer_env: dict[str, str]
                                             ) -> None:
    rng = random.Random(20261128)
    durable: dict[int, str] = {}
    kills = 0
    while kills < 50:
        proc = subprocess.Popen([sys.executable, str(WRITER), str(tmp_path), str(kills)],
                                stdout=subprocess.PIPE, text=True, env=writer_env)
        try:
            assert proc.stdout is not None
            opened = proc.stdout.readline().split()
            assert opened[0] == "open", opened
            # it resumes after everything it ever reported durable
            assert int(opened[1]) >= max(durable, default=0)
            for _ in range(rng.randint(0, 40)):
                word, seq, digest = proc.stdout.readline().split()
                assert word == "durable"
                durable[int(seq)] = digest
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        # lines already printed when it died are durable too (a line cut short by the
        # kill has no newline yet and is left out)
        assert proc.stdout is not None
        for line in proc.stdout.read().split("\n")[:-1]:
            word, seq, digest = line.split()
            durable[int(seq)] = digest
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        with JournalReader(tmp_path) as r:
            assert r.verify() == (None, "intact"), f"after kill {kills}"
    with JournalReader(tmp_path) as r:
        stored = {x["seq"]: x["hash"] for x in r.records()}
        assert r.verify() == (None, "intact")
    assert kills >= 50 and len(durable) > 100
    assert sorted(stored) == list(range(1, len(stored) + 1))  # gapless
    missing = [s for s, h in durable.items() if stored.get(s) != h]
    assert not missing, f"reported durable but lost or changed: {missing[:10]}"


def test_verify_on_something_that_is_not_a_journal(tmp_path: Path) -> None:
    (tmp_path / "journal.db").write_bytes(b"not a database, just bytes" * 100)
    assert cli_verify(tmp_path) == (1, f"floorguard verify: {tmp_path / 'journal.db'} is not "
                                       "a journal: file is not a database\n")
    (tmp_path / "journal.db").unlink()
    sqlite3.connect(tmp_path / "journal.db").execute("CREATE TABLE other (x)").connection.close()
    rc, out = cli_verify(tmp_path)
    assert (rc, out) == (1, f"floorguard verify: {tmp_path / 'journal.db'} holds no journal "
                            "(yet)\n")


# --- what only the prev link, the head mark or the console's copy can catch ----------------


@pytest.mark.parametrize("pos", [3, 6])
def test_a_middle_record_rewritten_with_its_hash_recomputed_breaks_the_next_link(
        journal_dir: Path, pos: int) -> None:
    """Only the prev check sees this: the rewritten record's own hash is right again, and
    the next record's hash still matches its (unchanged) content."""
    with db(journal_dir) as conn:
        rec = json.loads(conn.execute("SELECT record FROM journal WHERE seq = ?",
                                      (pos,)).fetchone()[0])
        rec["details"] = {"n": pos, "dev": "a harmless mouse"}
        rec["hash"] = record_hash(rec)
        conn.execute("UPDATE journal SET record = ?, hash = ? WHERE seq = ?",
                     (json.dumps(rec), rec["hash"], pos))
        recs = [json.loads(t) for (t,) in conn.execute("SELECT record FROM journal "
                                                       "ORDER BY seq")]
    assert all(record_hash(r) == r["hash"] for r in recs)  # every record self-consistent
    assert verify_chain(recs) == (pos + 1, "prev does not match the hash of the record "
                                           "before it")
    assert cli_verify(journal_dir) == (1, f"journal broken at seq {pos + 1}: prev does not "
                                          "match the hash of the record before it\n")


def test_a_record_relinked_to_a_made_up_prev_is_caught_at_that_seq(journal_dir: Path) -> None:
    with db(journal_dir) as conn:
        rec = json.loads(conn.execute("SELECT record FROM journal WHERE seq = 5").fetchone()[0])
        rec["prev"] = "e" * 64
        rec["hash"] = record_hash(rec)
        conn.execute("UPDATE journal SET record = ?, hash = ? WHERE seq = 5",
                     (json.dumps(rec), rec["hash"]))
    rc, out = cli_verify(journal_dir)
    assert (rc, out.split(":")[0]) == (1, "journal broken at seq 5")


def test_cutting_the_tail_together_with_the_head_mark_is_caught(journal_dir: Path) -> None:
    with db(journal_dir) as conn:
        conn.execute("DELETE FROM journal WHERE seq > 7")
        conn.execute("DELETE FROM meta WHERE key = 'head'")
    assert cli_verify(journal_dir) == (1, "journal broken at seq 8: the journal's head mark "
                                          "is missing: records after seq 7 may have been "
                                          "cut off\n")


def test_cutting_the_tail_below_the_consoles_acknowledgement_is_caught(journal_dir: Path
                                                                       ) -> None:
    """With the head rewritten to fit, the acknowledged seq still shows the cut."""
    with db(journal_dir) as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('acked_seq', '9')")
        last = conn.execute("SELECT hash FROM journal WHERE seq = 7").fetchone()[0]
        conn.execute("DELETE FROM journal WHERE seq > 7")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head'", (f"7 {last}",))
    assert cli_verify(journal_dir) == (1, "journal broken at seq 8: the console acknowledged "
                                          "records up to seq 9, but the journal ends at seq "
                                          "7\n")


def test_forty_good_events_and_one_with_os_bytes_are_all_stored(tmp_path: Path) -> None:
    """One event carrying bytes that are not UTF-8 (as os and psutil hand them over) used
    to fail its whole group commit: 40 good + 1 bad = 0 stored."""
    with Journal(tmp_path, group_window=0.5) as j:
        tickets = [j.append(fields("files.flagged", "info", path=f"/home/a/Desktop/{i}.csv"))
                   for i in range(20)]
        odd = fields("files.copied", "info", path=os.fsdecode(b"/media/u/cust-\xff\xfe.txt"))
        odd["user"] = os.fsdecode(b"op\xe9rateur")
        tickets.append(j.append(odd))
        tickets += [j.append(fields("files.flagged", "info", path=f"/tmp/{i}.csv"))
                    for i in range(20)]
        recs = [t.wait() for t in tickets]
        assert j.commits == 1
    assert [r["seq"] for r in recs] == list(range(1, 42))
    assert recs[20]["details"]["path"] == "/media/u/cust-\\xff\\xfe.txt"
    assert unescape(recs[20]["details"]["path"]) == b"/media/u/cust-\xff\xfe.txt"
    assert recs[20]["user"] == "op\\xe9rateur"
    assert cli_verify(tmp_path) == (0, "journal intact: 41 records, chain verified\n")


def test_an_entry_that_cannot_be_stored_costs_no_other_and_leaves_a_gap(tmp_path: Path
                                                                        ) -> None:
    """Past append's escape nothing should fail; if an entry still does (here one put on
    the writer's queue directly, as a future caller skipping append could), it alone
    fails and a chained agent.gap names what was lost."""
    with Journal(tmp_path, group_window=0.5) as j:
        tickets = [j.append(fields("files.flagged", "info", n=i)) for i in range(40)]
        bad = Entry(fields=fields("files.flagged", "violation", path="\udcff"),
                    done=threading.Event())
        j._q.put(bad)
        recs = [t.wait() for t in tickets]
        with pytest.raises(JournalError, match="could not store"):
            bad.wait()
    with JournalReader(tmp_path) as r:
        stored = list(r.records())
        assert r.verify() == (None, "intact")
    assert [x["seq"] for x in recs] == list(range(1, 41))
    gap = stored[-1]
    assert (len(stored), gap["kind"], gap["severity"]) == (41, "agent.gap", "warning")
    assert gap["details"]["severities"] == {"violation": 1}
    assert gap["details"]["kinds"] == {"files.flagged": 1}
    assert "could not be stored" in gap["details"]["reason"]


def test_a_cut_tail_with_every_mark_rewritten_passes_verify_but_the_console_flags_it(
        tmp_path: Path) -> None:
    """What the agent-side check cannot prove: whoever can write journal.db can cut its
    tail and rewrite the head and the acknowledgement to fit, and ``verify`` then sees a
    consistent, shorter journal. The console holds its own copy: the agent, writing on
    from the lower seq, sends seqs it already holds with other hashes, and the console
    flags them as rewritten."""
    import sqlalchemy as sa

    from tests.link.journal_fill import fill
    from tests.rigs.agent import AgentProcess
    from tests.rigs.console import LiveConsole
    from tests.rigs.processes import running, wait_until

    console = LiveConsole(tmp_path / "console")
    console.workdir.mkdir(parents=True)
    console.start()
    policy = tmp_path / "policy.toml"
    policy.write_text('[floor]\nname = "3F north"\n')
    agent = AgentProcess(tmp_path / "agent", policy, console_url=console.url)
    engine = sa.create_engine(console.db_url)

    def acked() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT max(acked_seq) FROM agents")).scalar() or 0)

    def flags() -> list[tuple[int, str]]:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT details FROM events WHERE agent = 'console' "
                                        "AND kind = 'agent.chain_broken'")).all()
        return [(json.loads(d)["from_seq"], json.loads(d)["reason"]) for (d,) in rows]

    with running(console):
        assert agent.enroll(console.url, console.enroll_code()).returncode == 0
        fill(agent.state_dir, 30)
        agent.start()
        with running(agent):
            agent.wait_for("agent.started")
            with JournalReader(agent.state_dir) as r:
                top = r.last_seq()
            wait_until(lambda: acked() >= top, 20, 0.1, "the journal to arrive")
        assert agent.stop() == 0
        with db(agent.state_dir) as conn:
            (h,) = conn.execute("SELECT hash FROM journal WHERE seq = 20").fetchone()
            conn.execute("DELETE FROM journal WHERE seq > 20")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'head'", (f"20 {h}",))
            conn.execute("UPDATE meta SET value = '20' WHERE key = 'acked_seq'")
        assert cli_verify(agent.state_dir) == (0, "journal intact: 20 records, chain "
                                                  "verified\n")
        assert flags() == []
        agent.start()
        with running(agent):
            wait_until(lambda: (21, "rewritten") in flags(), 20, 0.1,
                       "the console to flag the rewritten seq")
    engine.dispose()


def test_a_row_sqlite_refuses_costs_no_other_event_of_its_group_commit(tmp_path: Path
                                                                        ) -> None:
    """SQLite itself refusing one row (here a trigger, standing in for whatever a row can
    meet on a damaged file) fails that event alone; the gap says what was lost."""
    with Journal(tmp_path) as j:
        j.record(fields("files.flagged", "info", n=-1))
    with db(tmp_path) as conn:
        conn.execute("CREATE TRIGGER poison BEFORE INSERT ON journal WHEN NEW.record LIKE "
                     "'%poison%' BEGIN SELECT RAISE(ABORT, 'row refused'); END")
    with Journal(tmp_path, group_window=0.5) as j:
        tickets = [j.append(fields("files.flagged", "info", n=i)) for i in range(20)]
        bad = j.append(fields("files.copied", "violation", path="/media/poison.csv"))
        tickets += [j.append(fields("files.flagged", "info", n=i)) for i in range(20, 40)]
        with pytest.raises(JournalError, match="row refused"):
            bad.wait()
        recs = [t.wait() for t in tickets]
    assert [r["details"]["n"] for r in recs] == list(range(40))
    with JournalReader(tmp_path) as r:
        stored = list(r.records())
        assert r.verify() == (None, "intact")
    gaps = [e for e in stored if e["kind"] == "agent.gap"]
    assert len(stored) == 1 + 40 + 1 and len(gaps) == 1
    assert gaps[0]["details"]["severities"] == {"violation": 1}
    assert "row refused" in gaps[0]["details"]["reason"]


def test_verify_and_events_on_a_folder_they_cannot_enter_say_so_without_a_traceback(
        tmp_path: Path) -> None:
    # Run as nobody against root's 0700 folder: the journal's path cannot even be
    # looked at (EACCES), which is a message and exit 1, never a traceback.
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)  # noqa: S103 nobody must reach "locked" itself
    (locked / "state").mkdir()
    for cmd in ("verify", "events"):
        res = subprocess.run(
            ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
             sys.executable, "-m", "floorguard", cmd, "--state-dir", str(locked / "state")],
            env=base_env(), capture_output=True, text=True, timeout=60)
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr
        assert "cannot reach" in res.stderr and "Permission denied" in res.stderr
