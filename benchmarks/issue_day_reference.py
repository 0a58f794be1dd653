"""The reference workload of issue 24's day, from the issue's own commit (the budget's calibration).

On the issue's day notebooks 01-11 of commit c3e823a took 1,179 s in a fresh clone. This times the
same notebooks of the same commit here, between two timings of the fixed reference workload
(``run.reference_seconds``: ``benchmarks/reference_workload.py``; until 2026-12-06 the kit's own
laptop epoch, ``run.kit_epoch_seconds``), so the issue's day's reference follows as
1,179 s / (today's seconds / today's reference), and the budget in references from it
(``ISSUE_DAY_REFERENCE_SECONDS`` and ``REPRODUCE_BUDGET_REFERENCES`` in ``benchmarks/run.py``).

    git worktree add /tmp/c3e823a c3e823a
    python benchmarks/issue_day_reference.py /tmp/c3e823a
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import REPRODUCE_BUDGET_SECONDS, reference_seconds  # noqa: E402

ISSUE_DAY_SECONDS = 1179  # notebooks 01-11 of c3e823a on the issue's day (the issue's own sums)


def main(tree: str) -> None:
    before = reference_seconds()
    with tempfile.TemporaryDirectory() as out:  # the commit's own package and notebooks, a fresh output folder
        env = dict(os.environ, PYTHONPATH=tree, REWINDKIT_OUT=out, REWINDKIT_PROGRESS="0")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "rewindkit.cli", "notebooks", *[f"{i:02d}" for i in range(1, 12)],
                               "--profile", "laptop", "--executed-dir", f"{out}/executed"], env=env, cwd=tree,
                              capture_output=True, text=True)
        total = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"the notebooks failed:\n{proc.stderr[-3000:]}")
    after = reference_seconds()
    reference = (before + after) / 2
    references = total / reference
    issue_day = ISSUE_DAY_SECONDS / references
    print(f"reference workload {before:.3f} s before, {after:.3f} s after, mean {reference:.3f} s")
    print(f"notebooks 01-11 of {tree}: {total:.0f} s = {references:.0f} references; the issue's day "
          f"({ISSUE_DAY_SECONDS} s) had a reference of {issue_day:.3f} s; budget "
          f"{REPRODUCE_BUDGET_SECONDS} s = {REPRODUCE_BUDGET_SECONDS / issue_day:.0f} references")


if __name__ == "__main__":
    main(sys.argv[1])
