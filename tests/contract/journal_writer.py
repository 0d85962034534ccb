"""Appends events to a real Journal forever, printing ``durable SEQ HASH`` after each
event is durable. The crash test kills it with SIGKILL at random points."""

from __future__ import annotations

import random
import sys

from floorguard.journal import Journal


def main(state_dir: str, seed: int) -> None:
    rng = random.Random(seed)
    fields = {"agent": "a1", "host": "h", "seat": "T-01", "user": None, "control": "agent",
              "policy": "", "details": {"seed": seed}}
    with Journal(state_dir, group_window=0.01) as journal:
        print("open", journal.last_seq, flush=True)
        while True:
            if rng.random() < 0.5:
                rec = journal.record({**fields, "kind": "usb.blocked", "severity": "violation"})
                print("durable", rec["seq"], rec["hash"], flush=True)
            else:  # a burst of info events, group-committed
                tickets = [journal.append({**fields, "kind": "agent.command",
                                           "severity": "info"})
                           for _ in range(rng.randint(1, 20))]
                for t in tickets:
                    rec = t.wait()
                    print("durable", rec["seq"], rec["hash"], flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
