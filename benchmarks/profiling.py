"""Sampling a running server with py-spy, and summarising the collapsed stacks per function.

`python -m benchmarks.profiling FILE` prints the summary of a raw (collapsed) py-spy profile.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Final

__all__ = ["Profiler", "summarise"]

SAMPLE_RATE: Final = 200
ATTACH_SECONDS: Final = 1.0


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record` on `pid` while the block runs; a no-op when `output` is None or py-spy is missing."""

    def __init__(self, pid: int, output: Path | None, *, gil_only: bool = False) -> None:
        self.pid = pid
        self.output = output
        self.gil_only = gil_only
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        exe = _py_spy()
        if self.output is None or exe is None:
            return self
        argv = [exe, "record", "--pid", str(self.pid), "--rate", str(SAMPLE_RATE), "--format", "raw"]
        argv += ["--output", str(self.output), "--threads", "--full-filenames"]
        argv += ["--gil"] if self.gil_only else []
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(ATTACH_SECONDS)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def _frames(stack: str) -> tuple[str, list[str]]:
    """The thread group and the `path:function` frames of one collapsed stack, outermost first."""
    head, *rest = stack.split(";")
    thread = head.partition("): ")[2].rstrip("_0123456789") or head
    frames = []
    for frame in rest:
        name, _, where = frame.partition(" (")
        frames.append(f"{_short(where.rsplit(':', 1)[0])}:{name}")
    return thread, frames


def summarise(raw: str, top: int = 25, prefix: str = "rhinobox/") -> str:
    """Samples per thread, inclusive time per `prefix` function, and self time per frame, as % of samples.

    Samples are taken only of threads that are running (not idle), so 100% is all the work seen.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        thread, frames = _frames(stack)
        threads[thread] += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            if frame.startswith(prefix):
                inclusive[frame] += count
    if not total:
        return "no samples"

    def block(title: str, counts: Counter[str]) -> list[str]:
        return ["", title] + [f"  {100 * n / total:5.1f}%  {name}" for name, n in counts.most_common(top)]

    lines = [f"{total} samples of running threads"]
    lines += block("by thread:", threads)
    lines += block(f"inclusive, {prefix} functions:", inclusive)
    lines += block("self (leaf frames):", own)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--prefix", default="rhinobox/")
    args = parser.parse_args()
    print(summarise(args.profile.read_text(), args.top, args.prefix))


if __name__ == "__main__":
    main()
