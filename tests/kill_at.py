"""Run the unmem command line and kill -9 it at a chosen point (tests/test_faults.py).

    python tests/kill_at.py POINT unmem-arguments...

POINT is one of
    checkpoint:N          right after the N-th training checkpoint is saved (in the middle of unlearning)
    before:PATH:N         at the N-th rename onto a path ending in PATH, before it happens
    after:PATH:N          the same, right after it happened

Every file and directory unmem publishes is renamed into place (``unmem.io``), so the
renames are the points where a kill can leave one thing done and the next not.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _kill() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _counter(target: int):
    hits = 0

    def hit() -> bool:
        nonlocal hits
        hits += 1
        return hits == target

    return hit


def arm(point: str) -> None:
    kind, _, rest = point.partition(":")
    if kind == "checkpoint":
        from unmem.train.checkpoints import Checkpoints

        save, hit = Checkpoints.save, _counter(int(rest))

        def save_then_die(self, progress):
            save(self, progress)
            if hit():
                _kill()

        Checkpoints.save = save_then_die
        return
    suffix, _, count = rest.rpartition(":")
    replace, hit = os.replace, _counter(int(count))

    def replace_and_die(src, dst, *args, **kwargs):
        matches = Path(dst).as_posix().endswith("/" + suffix) and hit()
        if matches and kind == "before":
            _kill()
        replace(src, dst, *args, **kwargs)
        if matches:
            _kill()

    os.replace = replace_and_die


if __name__ == "__main__":
    arm(sys.argv[1])
    from unmem.cli import app

    app(sys.argv[2:], prog_name="unmem")
