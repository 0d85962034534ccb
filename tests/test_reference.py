"""The reference in docs/reference/ is generated from the code: a command, configuration
key, policy key, event kind or console route that it does not describe fails here."""

from __future__ import annotations

import subprocess
import sys

from tests.rigs.processes import REPO


def test_the_generated_reference_is_up_to_date_and_names_everything() -> None:
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "reference.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_a_kind_without_a_description_is_named() -> None:
    # The check is only worth having if it can fail: a kind the code declares but the
    # descriptions do not know must be named in the error.
    code = (
        "import sys; sys.argv = ['reference.py', '--check']\n"
        f"sys.path.insert(0, {str(REPO / 'scripts')!r})\n"
        f"sys.path.insert(0, {str(REPO / 'src')!r})\n"
        "import floorguard.events as ev\n"
        "ev.KINDS = ev.KINDS | {'usb.teleported'}\n"
        "import reference; sys.exit(reference.main(['--check']))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1
    assert "usb.teleported" in res.stderr
