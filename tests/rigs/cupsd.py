"""A private cupsd for the print tests: its own config, spool, socket and loopback port,
with the secure job policy the README recommends and PDF-writing queues."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.rigs.processes import free_port, wait_until

PDF_PPD = "lsb/usr/cupsfilters/Generic-PDF_Printer-PDF.ppd"

HERE = Path(__file__).parent
# The policy the README recommends, as shipped; and Debian's stock one for comparison.
SECURE_POLICY = (HERE.parent.parent / "src" / "floorguard" / "data" / "cupsd-policy.conf"
                 ).read_text()
STOCK_POLICY = (HERE / "stock-cupsd-policy.conf").read_text()


def printed(out: Path) -> bool:
    """Whether a queue's output file holds anything: a job printed to it."""
    return out.stat().st_size > 0


class Cupsd:
    """One cupsd instance. Its folder sits directly in /tmp with a short name because the
    socket path must stay under 108 bytes."""

    def __init__(self) -> None:
        for tool in ("cupsd", "lpadmin", "lp", "lpstat", "pdfinfo", "pdftoppm", "gs"):
            if shutil.which(tool) is None:
                raise AssertionError(f"{tool} is missing: install cups, cups-client, "
                                     "cups-bsd, cups-filters, poppler-utils and ghostscript "
                                     "(scripts/setup.sh does)")
        self.dir = Path(tempfile.mkdtemp(prefix="fgc", dir="/tmp"))
        # The operator (a non-root user) must reach the socket and read the documents;
        # cupsd's backend (user lp) writes the output.
        os.chmod(self.dir, 0o755)  # noqa: S103 see above
        for sub in ("spool", "cache", "state", "tmp", "log", "run", "out", "docs"):
            (self.dir / sub).mkdir()
        os.chmod(self.dir / "run", 0o755)  # noqa: S103 see above
        os.chmod(self.dir / "docs", 0o755)  # noqa: S103 see above
        os.chmod(self.dir / "out", 0o777)  # noqa: S103 see above
        self.socket = str(self.dir / "run" / "cups.sock")
        self.port = free_port()
        self.conf = self.dir / "cupsd.conf"
        self.files_conf = self.dir / "cups-files.conf"
        self.env = {**os.environ, "CUPS_SERVER": self.socket}
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        d = self.dir
        self.files_conf.write_text(
            "FileDevice Yes\nSystemGroup root lpadmin\n"
            f"ServerRoot {d}\nStateDir {d}/state\nCacheDir {d}/cache\n"
            f"RequestRoot {d}/spool\nTempDir {d}/tmp\nPrintcap {d}/printcap\n"
            f"ErrorLog {d}/log/error_log\nAccessLog {d}/log/access_log\n"
            f"PageLog {d}/log/page_log\n")
        self.write_conf(SECURE_POLICY)

    def write_conf(self, policy: str) -> None:
        self.conf.write_text(
            f"LogLevel info\nListen 127.0.0.1:{self.port}\nListen {self.socket}\n"
            "Browsing Off\nDefaultAuthType Basic\nWebInterface No\n"
            "<Location />\n  Order allow,deny\n  Allow from all\n</Location>\n" + policy)

    @property
    def spool(self) -> str:
        return str(self.dir / "spool")

    def start(self) -> Cupsd:
        self.proc = subprocess.Popen(
            ["cupsd", "-f", "-c", str(self.conf), "-s", str(self.files_conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def running() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("cupsd exited: " + self.error_log()[-2000:])
            res = subprocess.run(["lpstat", "-r"], env=self.env, capture_output=True,
                                 text=True, timeout=10)
            return "scheduler is running" in res.stdout and \
                "not running" not in res.stdout

        wait_until(running, 20, 0.02, "the private cupsd to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def error_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "log" / "error_log").read_text(errors="replace")
        return ""

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                             timeout=30)
        if check and res.returncode != 0:
            raise AssertionError(f"{args} failed: {res.stdout} {res.stderr}")
        return res

    def add_queue(self, prefix: str = "q", *, hold: str | None = None) -> tuple[str, Path]:
        """A new PDF-writing queue (unique name) and the file its output lands in. The file
        exists, empty, from the start: :func:`printed` tells whether a job wrote to it."""
        name = f"{prefix}{next(self._names)}"
        out = self.dir / "out" / f"{name}.pdf"
        # Since Debian's CUPS 2.4.2-3+deb12u10, cupsd opens a file: device with O_EXCL and
        # no O_CREAT: the file must exist, and it is never truncated between jobs, so each
        # queue gets a fresh, empty one that the backend (user lp) may write.
        out.touch(exist_ok=False)
        os.chmod(out, 0o666)  # noqa: S103 see above
        args = ["lpadmin", "-p", name, "-E", "-v", f"file://{out}", "-m", PDF_PPD]
        if hold:
            args += ["-o", f"job-hold-until-default={hold}"]
        self.run(*args)
        return name, out

    def submit(self, queue: str, path: Path, *, user: str = "alice", title: str = "doc"
               ) -> int:
        res = self.run("lp", "-d", queue, "-U", user, "-t", title, str(path))
        # "request id is q1-12 (1 file(s))"
        return int(res.stdout.split("request id is ", 1)[1].split()[0].rsplit("-", 1)[1])

    def make_pdf(self, name: str, pages: int) -> Path:
        path = self.dir / "docs" / name
        ps = " ".join(f"72 700 moveto (Page {i + 1} of {pages}) show showpage"
                      for i in range(pages))
        subprocess.run(["gs", "-q", "-dNOPAUSE", "-dBATCH", "-sDEVICE=pdfwrite",
                        f"-sOutputFile={path}", "-c",
                        f"/Helvetica findfont 36 scalefont setfont {ps}"],
                       check=True, capture_output=True, timeout=60)
        os.chmod(path, 0o644)
        return path
