"""Server CPU per file by content kind (media, random bytes, text), interleaved in one run (issue 19).

    .venv/bin/python -m benchmarks.kinds [--rounds 3] [--fsync never] [--native on|off|both]

Each round runs `benchmarks.load batch single --kind K` for every kind in turn (each round starting
with the next kind), so a drift of the shared machine touches all kinds alike; the table gives each
kind's median server CPU per file and its ratio to media's, the figure the type-detection goal is
stated in, and the same ratio for user CPU alone (type detection runs there; the kernel's file
creation, the same work for every kind, moves the sum most between runs). `--native both` runs each
kind with the compiled gates' filter and with the Python one (RHINOBOX_MAGIC_NATIVE), interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from benchmarks import load

KINDS: tuple[str, ...] = ("media", "binary", "text")
SCENARIOS: tuple[str, ...] = ("batch", "single")
MEASURES: tuple[str, ...] = ("cpu", "user")


def cpu_ms_per_file(report: list[dict[str, object]], fsync: str) -> dict[tuple[str, str], float]:
    """The RhinoBox server's CPU ms per file in each scenario of one `load --json` report, by
    (scenario, "cpu") for user + system time and (scenario, "user") for user time alone."""
    figures: dict[tuple[str, str], float] = {}
    for scenario in report:
        for measure in scenario["measures"]:  # type: ignore[attr-defined]
            if measure["target"] == f"rhinobox fsync={fsync}" and measure["cpu_seconds"] and measure["valid"]:
                name = str(scenario["name"])
                figures[(name, "cpu")] = measure["cpu_seconds"] / measure["files"] * 1000
                figures[(name, "user")] = measure["user_cpu_seconds"] / measure["files"] * 1000
    return figures


def rotated(kinds: Sequence[str], round_number: int) -> list[str]:
    """The kinds in this round's order: each goes first in turn, so an effect of the order (what the
    previous run left in caches and in the filesystem) is shared out rather than always paid by one."""
    shift = round_number % len(kinds)
    return [*kinds[shift:], *kinds[:shift]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync", default="never", choices=("always", "never"))
    parser.add_argument("--native", default="on", choices=("on", "off", "both"), help="RHINOBOX_MAGIC_NATIVE")
    args = parser.parse_args(argv)
    natives = ("on", "off") if args.native == "both" else (args.native,)
    samples: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "load.json"
        for round_number in range(args.rounds):
            for native in natives:
                os.environ["RHINOBOX_MAGIC_NATIVE"] = native  # the server started by `load` inherits it
                for kind in rotated(KINDS, round_number):
                    load_args = [*SCENARIOS, "--fsync", args.fsync, "--kind", kind, "--no-http-floor"]
                    load_args += ["--json", str(out)]
                    with contextlib.redirect_stdout(io.StringIO()):
                        load.main(load_args)
                    for (scenario, measure), value in cpu_ms_per_file(json.loads(out.read_text()), args.fsync).items():
                        samples[(native, kind, scenario, measure)].append(value)
    print(
        f"# python -m benchmarks.kinds --rounds {args.rounds} --fsync {args.fsync} --native {args.native}: "
        "server CPU ms/file (user + system), medians; user: the ratio of user CPU alone"
    )
    print("| filter | kind | " + " | ".join(f"{s} ms/file | {s} / media | {s} user / media" for s in SCENARIOS) + " |")
    print("|---|---|" + "---:|---:|---:|" * len(SCENARIOS))
    for native in natives:
        for kind in KINDS:
            cells = []
            for scenario in SCENARIOS:
                value, user = (statistics.median(samples[(native, kind, scenario, m)]) for m in MEASURES)
                media, media_user = (statistics.median(samples[(native, "media", scenario, m)]) for m in MEASURES)
                cells.append(f"{value:.3f} | {value / media:.2f}x | {user / media_user:.2f}x")
            label = "compiled" if native == "on" else "Python"
            print(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
