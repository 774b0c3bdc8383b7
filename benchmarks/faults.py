"""Fault-injection figures: tests/test_faults.py's run under libfiu, repeated with new seeds, printed.

    .venv/bin/python -m benchmarks.faults [--runs 5]

Each run starts a server under `fiu-run -x` (plus tests/fiu_extra.c's points for renameat2 and syncfs),
makes the storage calls fail (EIO, ENOSPC) under concurrent single, batch and resumable uploads and
deletes, then reads everything back, stops it and runs `rhinobox verify`; then restarts it without
faults, checks the store, stops it and verifies again. Prints each run's answers by status and code,
and the totals. Never fails.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.test_faults import SEED, Outcome, run_under_faults


async def main(runs: int) -> None:
    answers: Counter[tuple[int, str]] = Counter()
    findings: Counter[str] = Counter()
    final: Counter[str] = Counter()
    wrong = unreadable = escaped = deferred = sync_restarts = restart_problems = 0
    started = time.monotonic()
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="rhinobox-faults-") as tmp:
            outcome: Outcome = await run_under_faults(Path(tmp), random.Random(SEED + run))
        print(f"run {run + 1}/{runs}\n{outcome.figures()}", flush=True)
        for line in [*outcome.tally.wrong, *outcome.escaped, *outcome.restart_problems][:10]:
            print(f"  {line if len(line) < 4000 else line[:1000] + ' ... ' + line[-3000:]}")  # a traceback's end
        print(flush=True)
        answers += outcome.tally.answers
        findings.update(kind for kind, _ in outcome.verify_findings)
        final.update(kind for kind, _ in outcome.final_findings)
        wrong += len(outcome.tally.wrong)
        unreadable += len(outcome.unreadable)
        escaped += len(outcome.escaped)
        deferred += outcome.deferred
        sync_restarts += len(outcome.sync_restarts)
        restart_problems += len(outcome.restart_problems)
    by_class = Counter(f"{status // 100}xx" for status, _ in answers.elements())
    print(f"total: {answers.total()} requests in {time.monotonic() - started:.0f} s; {dict(sorted(by_class.items()))}")
    print(", ".join(f"{status} {code or '-'}: {n}" for (status, code), n in sorted(answers.items())))
    print(f"outside the contract: {wrong}; unhandled errors logged: {escaped}; unreadable: {unreadable}")
    print(f"restarts after a failed sync: {sync_restarts}; blob removals deferred and retried: {deferred}")
    print(f"verify at stop: {dict(findings) or 'clean'}; problems after a restart: {restart_problems}; ", end="")
    print(f"verify after it: {dict(final) or 'clean'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
