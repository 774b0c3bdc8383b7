"""Driving a server with Debian's wrk and benchmarks/wrk/distinct_multipart.lua: distinct files, little client CPU.

wrk builds each request in LuaJIT from a per-thread template (a short unique prefix per file) and runs
its event loop in C, so the client costs a fraction of what aiohttp's does on the same cores. With a
request count, each wrk thread stops once its share is answered and says so on stderr; wrk itself
sleeps to its `-d` regardless, so this module sends it SIGINT (its own "stop now") when every thread
is done. Without a count, wrk runs for the duration and requests still in flight at its end are sent
but not counted (the server may store a few more files than `files`).

    result = run_wrk("http://127.0.0.1:8090/ingest", files_per_request=1000, connections=2, requests=6)
"""

from __future__ import annotations

import json
import math
import resource
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

__all__ = ["SCRIPT", "WRK", "WrkResult", "require_wrk", "run_wrk", "wrk_available"]

WRK: Final = Path("/usr/bin/wrk")
SCRIPT: Final = Path(__file__).resolve().parent / "wrk" / "distinct_multipart.lua"
RESULT_PREFIX: Final = "rhinobox-wrk "
THREAD_DONE_PREFIX: Final = "rhinobox-wrk: thread"
FILE_SIZE: Final = 4096
# wrk drops latencies above --timeout from its histogram (it counts them as timeouts); a 1,000-file
# batch takes about a second on a busy 2-core machine, so 30 s leaves room without a huge histogram.
LATENCY_CAP: Final = "30s"
COUNT_MODE_CAP_S: Final = 600.0  # with a request count, -d only bounds a run that went wrong (a lost request)
DURATION_S: Final = 10.0
STOP_RETRY_S: Final = 1.0  # SIGINT can land on a wrk thread that is just ending; then it is sent again
STOP_TRIES: Final = 30


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run did, from its done-line: answered requests and files, time, statuses, latency."""

    requests: int  # answered
    files: int  # answered requests x files per request
    seconds: float  # first request built to last answer read (all threads, one monotonic clock)
    non_200: int
    p50_ms: float
    p99_ms: float
    sent: int  # requests built; more than `requests` only when a duration ended the run
    stored: int  # per the answers' counts
    duplicates: int
    failed: int
    unparsed: int  # answers without RhinoBox's counts (an error page, say)
    socket_errors: int
    client_cpu_s: float  # wrk's user + system CPU (children this process reaped during the run)


def wrk_available() -> bool:
    return WRK.exists()


def require_wrk() -> None:
    """Fail with the fix when Debian's wrk is missing."""
    if not wrk_available():
        raise RuntimeError(f"{WRK} not found: apt-get install wrk")


def wrk_argv(
    url: str,
    *,
    files_per_request: int,
    connections: int,
    threads: int,
    requests: int,
    duration_s: float,
    file_size: int,
    salt: str,
    headers: Sequence[str],
    cpus: str,
) -> list[str]:
    """The command line: taskset (if pinned), wrk's options, the script and its key=value arguments."""
    argv = [str(WRK), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, math.ceil(duration_s))}s"]
    argv += ["--timeout", LATENCY_CAP, "-s", str(SCRIPT)]
    for header in headers:
        argv += ["-H", header]
    argv += [url, "--", f"files={files_per_request}", f"size={file_size}", f"requests={requests}"]
    argv += [f"threads={threads}", f"salt={salt}"]
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_for_threads(stderr: IO[str], threads: int) -> list[str]:
    """Read wrk's stderr until every thread said it is done (or wrk exited); returns the other lines."""
    done = 0
    other: list[str] = []
    while done < threads and (line := stderr.readline()):
        if line.startswith(THREAD_DONE_PREFIX):
            done += 1
        else:
            other.append(line)
    return other


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGINT until wrk exits: it ends its sleep, joins its threads and runs done()."""
    for _ in range(STOP_TRIES):
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_RETRY_S)
        except subprocess.TimeoutExpired:
            continue
        return
    proc.kill()


def _parse(stdout: str, stderr: str, returncode: int) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if returncode != 0 or not lines:
        raise RuntimeError(f"wrk exited {returncode} without a result line:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return figures


def run_wrk(
    url: str,
    *,
    files_per_request: int,
    connections: int,
    threads: int = 1,
    requests: int = 0,
    duration_s: float | None = None,
    file_size: int = FILE_SIZE,
    cpus: str = "",
    headers: Sequence[str] = (),
) -> WrkResult:
    """POST distinct files to `url`: `requests` in all (0: for `duration_s`); `cpus` pins wrk (taskset).

    With `requests`, `duration_s` only bounds the run (default COUNT_MODE_CAP_S); without, it is the
    run's length (default DURATION_S). `connections` must be a multiple of `threads` (wrk gives each
    thread connections // threads).
    """
    require_wrk()
    if connections % threads or (requests and requests < threads):
        raise ValueError(f"{connections} connections and {requests} requests do not split over {threads} threads")
    if cpus and shutil.which("taskset") is None:
        raise RuntimeError("taskset not found: apt-get install util-linux")
    argv = wrk_argv(
        url,
        files_per_request=files_per_request,
        connections=connections,
        threads=threads,
        requests=requests,
        duration_s=duration_s or (COUNT_MODE_CAP_S if requests else DURATION_S),
        file_size=file_size,
        salt=secrets.token_hex(8),
        headers=headers,
        cpus=cpus,
    )
    cpu_before = _children_cpu_s()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        other = _wait_for_threads(proc.stderr, threads) if requests else []
        if requests:
            _stop(proc)
        stdout, stderr = proc.communicate()
    figures = _parse(stdout, "".join(other) + stderr, proc.returncode)
    answered = int(figures["answered"])
    span = float(figures["span_s"])
    return WrkResult(
        requests=answered,
        files=answered * files_per_request,
        seconds=span if span > 0 else float(figures["wrk_duration_s"]),
        non_200=int(figures["non_200"]),
        p50_ms=float(figures["p50_ms"]),
        p99_ms=float(figures["p99_ms"]),
        sent=int(figures["sent"]),
        stored=int(figures["stored"]),
        duplicates=int(figures["duplicates"]),
        failed=int(figures["failed"]),
        unparsed=int(figures["unparsed"]),
        socket_errors=sum(int(figures["errors"][kind]) for kind in ("connect", "read", "write", "timeout")),
        client_cpu_s=_children_cpu_s() - cpu_before,
    )
