"""Print approval: every job waits in CUPS until an SV approves it from the console.

Policy table ``[print]``:

- ``approval = "required"`` holds every job on the selected queues (``queues`` globs,
  minus ``exempt`` globs) by setting the queue's ``job-hold-until-default`` to
  ``indefinite``. If anyone changes that setting back, it is restored at once and
  recorded as a violation (``print.hold_restored``).
- Each new held job is recorded as ``print.held`` with its queue, operator, seat, title,
  size, page count (from the document: CUPS reports none for held jobs) and a small
  first-page thumbnail for the SV. Text and unknown formats carry a placeholder flag
  instead of a picture. The job is noticed within a second by a watch on the spool
  folder, and by a ``Get-Jobs`` reconcile every ``check_interval`` even without it.
- The SV decides in the console. Approval releases the job (``print.approved`` naming
  the SV, then ``print.released`` once CUPS reports it completed); denial cancels it
  (``print.denied`` with the reason). Jobs above ``note_above_pages`` pages need a note
  with the approval. A decision for a job that no longer exists is recorded as
  ``print.decision_failed`` and acknowledged, never retried forever.
- A job nobody decided on within ``expire_after`` is cancelled (``print.expired``).
- ``approval = "off"`` holds nothing, unless ``note_above_pages`` is set: then every job
  is held, those of at most that many pages are released automatically (approved by
  ``policy``) and larger ones wait for an SV.

Fail closed: with the console unreachable jobs simply stay held. Known jobs and decisions
not yet carried out are kept in ``STATE_DIR/print-state.json`` (written atomically), so a
restart of the agent, the console or cupsd loses nothing. The agent checks cupsd's own
policy and records ``print.misconfigured`` when an operator could release, alter or cancel
their own held job (the README shows the cupsd policy that prevents it).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import structlog

from floorguard.agent.adapters.cups import (
    ABORTED,
    CANCELED,
    COMPLETED,
    GONE,
    HELD,
    NOT_FOUND,
    NOT_POSSIBLE,
    Cups,
    CupsUnreachable,
    IppError,
    Job,
)
from floorguard.agent.controls.base import Control, ControlContext, ControlUnavailable
from floorguard.agent.controls.print.rules import (
    _validate_decision,
    auto_release,
    cupsd_policy_problems,
    expired,
    holds,
    needs_note,
    parse_pdfinfo_pages,
    postscript_pages,
    queue_selected,
    text_pages,
)
from floorguard.agent.guarded import GUARDS, GuardedThread
from floorguard.events import Command
from floorguard.policy import Policy, PrintSettings

log = structlog.get_logger("floorguard.print")

STATE_FILE = "print-state.json"
DEFAULT_SPOOL = "/var/spool/cups"
DEFAULT_CUPSD_CONF = "/etc/cups/cupsd.conf"
THUMBNAIL_MAX = 48 * 1024  # bytes of PNG; an event must stay small
TOOL_TIMEOUT = 15.0


# --- pure decisions -----------------------------------------------------------------------


# --- the OS side of documents -------------------------------------------------------------


_DROP = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
         "--no-new-privs", "--"]
_can_drop: bool | None = None


def _drop_privileges() -> bool:
    """Whether tools can be run as ``nobody`` here (root with CAP_SETUID/CAP_SETGID)."""
    global _can_drop
    if _can_drop is None:
        _can_drop = False
        if os.geteuid() == 0 and shutil.which("setpriv"):
            try:
                subprocess.run([*_DROP, "true"], capture_output=True, timeout=10,
                               check=True)
                _can_drop = True
            except (OSError, subprocess.SubprocessError):
                log.warning("cannot run document tools as nobody (CAP_SETUID/CAP_SETGID "
                            "missing?); they run with the agent's rights")
    return _can_drop


def _sandboxed(args: list[str]) -> list[str]:
    """Documents come from operators: parse them with no privileges and bounded memory and
    CPU (``prlimit``), as ``nobody`` when the agent runs as root (``setpriv``)."""
    cmd = list(args)
    if _drop_privileges():
        cmd = [*_DROP, *cmd]
    if shutil.which("prlimit"):
        cmd = ["prlimit", f"--as={1 << 30}", "--cpu=20", "--", *cmd]
    return cmd


def _tool(args: list[str], data: bytes) -> bytes:
    """Run a poppler tool on ``data`` through stdin/stdout: the document never touches
    the disk in a place another user could read."""
    done = subprocess.run(_sandboxed(args), input=data, capture_output=True,
                          timeout=TOOL_TIMEOUT, check=True)
    return done.stdout


def describe_document(fmt: str, data: bytes) -> dict[str, Any]:
    """Page count and first-page thumbnail of a spooled document, as event details."""
    out: dict[str, Any] = {"format": fmt, "size": len(data), "pages": None,
                           "pages_source": "unknown", "thumbnail": None,
                           "thumbnail_placeholder": None}
    if fmt == "application/pdf" or data.startswith(b"%PDF-"):
        try:
            info = _tool(["pdfinfo", "-"], data).decode("utf-8", "replace")
            out["pages"] = parse_pdfinfo_pages(info)
            out["pages_source"] = "pdfinfo"
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            log.warning("pdfinfo could not read a held job", error=str(exc))
        out.update(_thumbnail(data))
    elif fmt.startswith("text/"):
        out["pages"] = text_pages(data)
        out["pages_source"] = "estimated"
        out["thumbnail_placeholder"] = "text"
    elif fmt == "application/postscript":
        out["pages"] = postscript_pages(data)
        out["pages_source"] = "dsc" if out["pages"] is not None else "unknown"
        out["thumbnail_placeholder"] = "unknown_format"
    else:
        out["thumbnail_placeholder"] = "unknown_format"
    return out


def _thumbnail(pdf: bytes) -> dict[str, Any]:
    try:
        png = _tool(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", "-singlefile",
                     "-"], pdf)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("pdftoppm could not render a held job", error=str(exc))
        return {"thumbnail_placeholder": "render_failed"}
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        return {"thumbnail_placeholder": "render_failed"}
    if len(png) > THUMBNAIL_MAX:
        return {"thumbnail_placeholder": "too_large"}
    return {"thumbnail": base64.b64encode(png).decode("ascii")}


class StateFile:
    """The control's memory across restarts: one JSON file replaced atomically."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, Any]:
        empty: dict[str, Any] = {"version": 1, "enforced": [], "jobs": {}, "decisions": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return empty
        except (OSError, ValueError) as exc:
            # Keep the unreadable file for inspection; starting empty only means held
            # jobs are reported again, never that one is released.
            bad = self.path.with_suffix(".unreadable")
            with contextlib.suppress(OSError):
                os.replace(self.path, bad)
            log.error("print state unreadable; starting afresh", path=str(self.path),
                      error=str(exc), kept=str(bad))
            return empty
        if not isinstance(data, dict) or data.get("version") != 1:
            return empty
        for key in ("jobs", "decisions"):
            if not isinstance(data.get(key), dict):
                data[key] = {}
        if not isinstance(data.get("enforced"), list):
            data["enforced"] = []
        return data

    def save(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


# --- the control --------------------------------------------------------------------------


class PrintControl(Control):
    """Holds print jobs until an SV approves them (see the module docstring)."""

    name = "print"
    check_interval = 5.0  # the agent's scheduler only nudges; the control's thread polls

    def __init__(self, ctx: ControlContext, *, cups: Cups | None = None,
                 spool: str | None = None, cupsd_conf: str | None = None):
        super().__init__(ctx)
        self.cups = cups
        self.spool = spool if spool is not None else (
            getattr(ctx.config, "cups_spool", "") or DEFAULT_SPOOL)
        self.cupsd_conf = cupsd_conf if cupsd_conf is not None else (
            getattr(ctx.config, "cups_conf", "") or DEFAULT_CUPSD_CONF)
        self.rules: PrintSettings | None = None
        self.store = StateFile(Path(ctx.config.state_dir) / STATE_FILE)
        self.state: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: GuardedThread | None = None
        self._observer: Any = None
        self._misconfig: list[str] | None = None
        self._misconfig_checked = -math.inf
        self.watching = False
        self.cups_ok = True

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, policy: Policy) -> None:
        super().start(policy)
        self.rules = policy.settings(PrintSettings)
        if self.cups is None:
            self.cups = Cups(self.ctx.config.cups_server)
        try:
            self.cups.get_printers()
        except CupsUnreachable as exc:
            raise ControlUnavailable(str(exc)) from exc
        self.store.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if tools_missing():
            log.error("poppler tools missing: page counts and thumbnails of PDF jobs will "
                      "be unknown; install poppler-utils", missing=tools_missing())
        with self._lock:
            self.state = self.store.load()
        self.ctx.commands.register(Command.PRINT_DECIDE, self.decide)
        self.reconcile()
        self._start_watch()
        self._thread = GuardedThread("print", self._run, stop=self._stop)
        self._thread.start()

    def apply_policy(self, policy: Policy) -> None:
        super().apply_policy(policy)
        with self._lock:
            self.rules = policy.settings(PrintSettings)
        self._wake.set()

    def check(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        # Held jobs stay held: stopping never releases anything.
        self.ctx.commands.unregister(Command.PRINT_DECIDE)
        self._stop.set()
        self._wake.set()
        GUARDS.unprobe("print-spool-observer")
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                self._observer.join(2)
        if self._thread is not None:
            self._thread.join(10)
        if self.cups is not None:
            self.cups.close()

    def status(self) -> dict[str, Any]:
        with self._lock:
            jobs = self.state.get("jobs", {})
            return {"held": sum(1 for j in jobs.values() if j.get("phase") == "held"),
                    "watching_spool": self.watching, "cups_reachable": self.cups_ok,
                    "misconfigured": bool(self._misconfig)}

    def _start_watch(self) -> None:
        spool = Path(self.spool)
        if not spool.is_dir() or not os.access(spool, os.R_OK | os.X_OK):
            log.info("spool folder not readable; relying on Get-Jobs polling",
                     spool=str(spool))
            return
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a core dependency
            return
        control = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                # Runs on watchdog's thread: never let an exception end the watch.
                try:
                    name = os.path.basename(str(getattr(event, "dest_path", "") or
                                                event.src_path))
                    if name.startswith(("d", "c")):
                        control._wake.set()
                except Exception:
                    log.exception("spool watch callback failed")

        try:
            observer = Observer()
            observer.schedule(Handler(), str(spool), recursive=False)
            observer.start()
        except OSError as exc:
            log.warning("cannot watch the spool folder; relying on polling",
                        spool=str(spool), error=str(exc))
            return
        self._observer = observer
        self.watching = True
        GUARDS.probe("print-spool-observer", observer.is_alive)

    def _run(self) -> None:
        while not self._stop.is_set():
            rules = self.rules
            interval = rules.check_interval if rules else 2.0
            with self._lock:
                waiting = any(j.get("phase") == "approved"
                              for j in self.state.get("jobs", {}).values())
            # A released job is watched closely so the SV sees "printed" at once.
            self._wake.wait(0.05 if waiting else interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.reconcile()
            except Exception:
                log.exception("print reconcile failed")

    # -- reconcile -----------------------------------------------------------------------

    def reconcile(self) -> None:
        """One pass: queues held, pending decisions applied, new jobs recorded, expired
        jobs cancelled, released jobs followed to completion."""
        assert self.cups is not None
        with self._lock:
            try:
                # Each step on its own: cupsd refusing one operation (a queue it will not
                # modify, say) must not stop new jobs from being seen.
                for step in (self._reconcile_queues, self._apply_pending_decisions,
                             self._reconcile_jobs, self._follow_released):
                    try:
                        step()
                    except CupsUnreachable:
                        raise
                    except IppError as exc:
                        log.error("cupsd refused a print reconcile step",
                                  step=step.__name__, error=str(exc))
                self.cups_ok = True
            except CupsUnreachable as exc:
                if self.cups_ok:
                    log.warning("cupsd unreachable; held jobs stay held", error=str(exc))
                self.cups_ok = False
            finally:
                self._save()
            self._check_server_policy()

    def _save(self) -> None:
        try:
            self.store.save(self.state)
        except OSError:
            log.exception("cannot save the print state")

    def _reconcile_queues(self) -> None:
        assert self.cups is not None and self.rules is not None
        rules = self.rules
        enforced: list[str] = self.state["enforced"]
        for printer in self.cups.get_printers():
            selected = queue_selected(printer.name, rules.queues, rules.exempt)
            if selected and holds(rules):
                if printer.hold_default != "indefinite":
                    self.cups.set_hold_default(printer.name, "indefinite")
                    behind_back = printer.name in enforced
                    self.record("print.hold_restored",
                                "violation" if behind_back else "info",
                                {"queue": printer.name, "found": printer.hold_default,
                                 "set": "indefinite", "initial": not behind_back},
                                user=None)
                if printer.name not in enforced:
                    enforced.append(printer.name)
            elif printer.name in enforced:
                # The policy no longer holds this queue: give it back its normal flow.
                if printer.hold_default == "indefinite":
                    self.cups.set_hold_default(printer.name, "no-hold")
                enforced.remove(printer.name)

    def _reconcile_jobs(self) -> None:
        assert self.cups is not None and self.rules is not None
        rules = self.rules
        jobs: dict[str, Any] = self.state["jobs"]
        live = {j.id: j for j in self.cups.get_jobs()}
        last = self.state.get("last_job_id")
        if not isinstance(last, int):
            # First look at this cupsd: jobs already queued, printing or printed predate
            # the hold; only later ones are judged.
            last = max((j.id for j in self.cups.get_jobs("all")), default=0)
            self.state["last_job_id"] = last
        newer = {j.id: j for j in self.cups.get_jobs("all", first_job_id=last + 1)}
        for job in sorted({**newer, **live}.values(), key=lambda j: j.id):
            known = jobs.get(str(job.id))
            if known is not None and known.get("created") != job.created:
                known = None  # cupsd's numbering started over: a different job
            selected = holds(rules) and queue_selected(job.printer, rules.queues,
                                                      rules.exempt)
            if known is None:
                if selected and job.held:
                    self._new_job(job)
                elif selected and job.id > last and job.state < CANCELED:
                    self._bypass(job)
                elif selected and job.id > last and job.state == COMPLETED:
                    self.record("print.released", "violation",
                                {"job_id": job.id, "queue": job.printer,
                                 "title": job.title, "operator": job.user,
                                 "outcome": "printed without approval: the job asked not "
                                            "to be held"}, user=job.user or None)
            elif known["phase"] == "held" and not job.held:
                self._released_elsewhere(job, known)
        self.state["last_job_id"] = max([last, *newer, *live])
        now = self.ctx.clock()
        for key, known in list(jobs.items()):
            jid = int(key)
            if known["phase"] != "held":
                continue
            if jid not in live:
                self._gone(jid, known)
            elif expired(known["seen_at"], now, rules.expire_after) and \
                    key not in self.state["decisions"]:
                self._expire(jid, known)

    def _new_job(self, job: Job) -> None:
        assert self.cups is not None and self.rules is not None
        try:
            fmt, data = self.cups.get_document(job.id)
            doc = describe_document(fmt, data)
        except CupsUnreachable:
            raise
        except IppError as exc:
            log.warning("cannot read a held job's document", job=job.id, error=str(exc))
            doc = {"format": "", "size": job.k_octets * 1024, "pages": None,
                   "pages_source": "unknown", "thumbnail": None,
                   "thumbnail_placeholder": "unreadable"}
        seat = self.ctx.config.seat_label
        details = {"job_id": job.id, "queue": job.printer, "operator": job.user,
                   "seat": seat, "title": job.title, "origin_host": job.origin_host,
                   "needs_note": needs_note(doc["pages"], self.rules.note_above_pages),
                   "expire_after": self.rules.expire_after, **doc}
        self.record("print.held", "info", details, user=job.user or None, wait=True)
        self.state["jobs"][str(job.id)] = {
            "phase": "held", "created": job.created, "seen_at": self.ctx.clock(),
            "queue": job.printer, "user": job.user, "title": job.title,
            "pages": doc["pages"]}
        if auto_release(self.rules, doc["pages"]):
            self.state["decisions"][str(job.id)] = {
                "decision": "approve", "by": "policy", "reason": "", "note":
                f"at most {self.rules.note_above_pages} pages"}
            self._apply(job.id)

    def _bypass(self, job: Job) -> None:
        """A new job on a held queue that is not held: its client asked for
        ``job-hold-until=no-hold``, which cupsd lets any client do. Cancel it at once."""
        assert self.cups is not None
        resp = self.cups.cancel_job(job.id)
        cancelled = resp.status not in (NOT_FOUND, GONE, NOT_POSSIBLE)
        after = self.cups.get_job(job.id)
        printed = after is not None and after.state == COMPLETED
        self.record("print.denied", "violation",
                    {"job_id": job.id, "queue": job.printer, "title": job.title,
                     "operator": job.user, "by": "policy", "cancelled": cancelled,
                     "printed": printed,
                     "reason": "the job asked not to be held (job-hold-until), bypassing "
                               "approval; it was cancelled" if not printed else
                               "the job asked not to be held and printed before it could "
                               "be cancelled"}, user=job.user or None)

    def _released_elsewhere(self, job: Job, known: dict[str, Any]) -> None:
        if str(job.id) in self.state["decisions"]:
            return
        # Someone released it without an SV: that is the evidence the SV needs.
        self.record("print.released", "violation",
                    {"job_id": job.id, "queue": known["queue"], "title": known["title"],
                     "outcome": "released outside floorguard",
                     "job_state": job.state}, user=known["user"] or None)
        known["phase"] = "approved"
        known["outside"] = True

    def _gone(self, jid: int, known: dict[str, Any]) -> None:
        assert self.cups is not None
        job = self.cups.get_job(jid)
        state = job.state if job else None
        if state == COMPLETED:
            self.record("print.released", "violation",
                        {"job_id": jid, "queue": known["queue"], "title": known["title"],
                         "outcome": "printed without approval"}, user=known["user"] or None)
        else:
            self.record("print.denied", "warning",
                        {"job_id": jid, "queue": known["queue"], "title": known["title"],
                         "by": None, "reason": "cancelled outside floorguard",
                         "job_state": state}, user=known["user"] or None)
        self._forget(jid)

    def _expire(self, jid: int, known: dict[str, Any]) -> None:
        assert self.cups is not None and self.rules is not None
        resp = self.cups.cancel_job(jid)
        self.record("print.expired", "warning",
                    {"job_id": jid, "queue": known["queue"], "title": known["title"],
                     "operator": known["user"], "expire_after": self.rules.expire_after,
                     "cancelled": resp.status not in (NOT_FOUND, GONE, NOT_POSSIBLE)},
                    user=known["user"] or None)
        self._forget(jid)

    def _forget(self, jid: int) -> None:
        self.state["jobs"].pop(str(jid), None)
        self.state["decisions"].pop(str(jid), None)

    def _follow_released(self) -> None:
        assert self.cups is not None
        for key, known in list(self.state["jobs"].items()):
            if known["phase"] != "approved":
                continue
            job = self.cups.get_job(int(key))
            if job is not None and job.state < CANCELED:
                continue
            outcome = {COMPLETED: "completed", CANCELED: "canceled", ABORTED: "aborted"
                       }.get(job.state if job else -1, "unknown")
            if not known.get("outside"):
                self.record("print.released", "info" if outcome == "completed" else "warning",
                            {"job_id": int(key), "queue": known["queue"],
                             "title": known["title"], "outcome": outcome,
                             "approved_by": known.get("approved_by")},
                            user=known["user"] or None)
            self._forget(int(key))

    def _check_server_policy(self) -> None:
        now = self.ctx.clock()
        if now - self._misconfig_checked < 30:
            return
        self._misconfig_checked = now
        try:
            text = Path(self.cupsd_conf).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problems = [f"cannot read {self.cupsd_conf} to verify cupsd's policy: "
                        f"{exc.strerror}"]
        else:
            policies = {"default"}
            with contextlib.suppress(IppError):
                assert self.cups is not None
                policies = {p.op_policy or "default" for p in self.cups.get_printers()}
            problems = []
            for name in sorted(policies):
                problems += [f"<Policy {name}> {p}" for p in cupsd_policy_problems(text, name)]
        if problems != self._misconfig:
            self._misconfig = problems
            if problems:
                self.record("print.misconfigured", "violation",
                            {"cupsd_conf": self.cupsd_conf, "problems": problems},
                            user=None)

    # -- decisions -----------------------------------------------------------------------

    def decide(self, args: dict[str, Any]) -> dict[str, Any]:
        """The console's ``print.decide`` command: ``{job_id, decision: approve|deny, by,
        reason, note}``. The decision is stored before it is carried out, so it survives
        a restart; it is carried out at once when cupsd is reachable."""
        problem = _validate_decision(args)
        if problem:
            return {"ok": False, "error": problem}
        jid = int(args["job_id"])
        key = str(jid)
        decision = {"decision": args["decision"], "by": str(args["by"]),
                    "reason": str(args.get("reason") or ""),
                    "note": str(args.get("note") or "")}
        with self._lock:
            try:
                if key not in self.state["jobs"]:
                    self._reconcile_jobs()  # a job the SV saw before this pass did
            except CupsUnreachable:
                pass
            known = self.state["jobs"].get(key)
            if known is None:
                return self._decision_failed(jid, decision, "the job no longer exists "
                                             "(printed, cancelled or expired)")
            if known["phase"] != "held":
                return {"ok": True, "already": known["phase"]}
            rules = self.rules
            if decision["decision"] == "approve" and rules and not decision["note"].strip() \
                    and needs_note(known.get("pages"), rules.note_above_pages):
                return self._decision_failed(
                    jid, decision, f"a job above {rules.note_above_pages} pages (or of "
                    "unknown length) needs a note with the approval", user=known["user"],
                    held=True)
            self.state["decisions"][key] = decision
            self._save()
            try:
                result = self._apply(jid)
            except CupsUnreachable:
                return {"ok": True, "pending": True,
                        "note": "cupsd is unreachable; the decision is kept and carried "
                                "out when it is back"}
            except IppError as exc:
                # cupsd refused (e.g. the agent's user is not in its SystemGroup): the
                # job stays held and the SV can decide again once that is fixed.
                self.state["decisions"].pop(key, None)
                return self._decision_failed(jid, decision, str(exc), user=known["user"],
                                             held=True)
            finally:
                self._save()
        self._wake.set()
        return result

    def _decision_failed(self, jid: int, decision: dict[str, Any], why: str,
                         user: str | None = None, *, held: bool = False) -> dict[str, Any]:
        """Report a decision that cannot be carried out; ``held`` says the job still waits
        for another decision (the console offers it again)."""
        self.record("print.decision_failed", "warning",
                    {"job_id": jid, **decision, "error": why, "still_held": held},
                    user=user, wait=True)
        return {"ok": False, "error": why, "final": True, "still_held": held}

    def _apply_pending_decisions(self) -> None:
        for key in list(self.state["decisions"]):
            known = self.state["jobs"].get(key)
            if known is None or known["phase"] != "held":
                self.state["decisions"].pop(key, None)
                continue
            try:
                self._apply(int(key))
            except CupsUnreachable:
                raise
            except IppError as exc:
                decision = self.state["decisions"].pop(key)
                self._decision_failed(int(key), decision, str(exc),
                                      user=known["user"] or None, held=True)

    def _apply(self, jid: int) -> dict[str, Any]:
        assert self.cups is not None
        key = str(jid)
        decision = self.state["decisions"][key]
        known = self.state["jobs"][key]
        user = known["user"] or None
        base = {"job_id": jid, "queue": known["queue"], "title": known["title"],
                "operator": known["user"], "pages": known.get("pages"),
                "by": decision["by"]}
        if decision["decision"] == "approve":
            resp = self.cups.release_job(jid)
            if resp.status in (NOT_FOUND, GONE) or (
                    resp.status == NOT_POSSIBLE and not self._printing(jid)):
                self._forget(jid)
                return self._decision_failed(jid, decision, "the job is no longer held "
                                             "in CUPS", user=user)
            self.record("print.approved", "info", {**base, "note": decision["note"]},
                        user=user, wait=True)
            known["phase"] = "approved"
            known["approved_by"] = decision["by"]
            self.state["decisions"].pop(key, None)
            return {"ok": True, "released": True}
        resp = self.cups.cancel_job(jid)
        if resp.status in (NOT_FOUND, GONE, NOT_POSSIBLE):
            self._forget(jid)
            return self._decision_failed(jid, decision, "the job no longer exists in CUPS",
                                         user=user)
        self.record("print.denied", "info", {**base, "reason": decision["reason"]},
                    user=user, wait=True)
        self._forget(jid)
        return {"ok": True, "cancelled": True}

    def _printing(self, jid: int) -> bool:
        assert self.cups is not None
        job = self.cups.get_job(jid)
        return job is not None and job.state != HELD and job.state < CANCELED


def tools_missing() -> list[str]:
    """The poppler tools page counts and thumbnails need (for a clear start-up error)."""
    return [t for t in ("pdfinfo", "pdftoppm") if shutil.which(t) is None]
