"""Storage faults injected with libfiu: EIO and ENOSPC from the POSIX calls of a real server under load.

The server runs under `fiu-run -x` (libfiu's POSIX wrappers preloaded, remote control through a fifo)
plus tests/fiu_extra.c, built here with gcc and preloaded after them: failure points for `renameat2`
(the blob commit) and `syncfs` (the grouped sync), which libfiu does not wrap. Rounds of faults (every
failure point failing with probability `FAULT_PROBABILITY`, each with its own errno) hit concurrent
single and batch uploads, resumable (tus) uploads and deletes. Every answer is a success or the JSON
error shape with a storage code (507 `insufficient_storage`, 500 `storage_error`): never text, never
`internal`, never a lost connection. Once the faults stop the server serves again (after a failed
`syncfs`, once restarted: it refuses durable answers until then), and afterwards every answered upload
reads back byte-identical, no spool or temporary file is left, every catalog row has an intact blob,
`rhinobox verify` is clean (no orphan either: a blob whose removal failed is removed later) and the
server restarts cleanly.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import random
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from rhinobox.app import create_app
from rhinobox.http.keys import CATALOG
from tests.helpers import (
    AiohttpClient,
    assert_error,
    blake3_hex,
    blob_files,
    form,
    make_settings,
    record_fails_once,
    spool_files,
)
from tests.server_process import RhinoBoxProcess, blob_problems, catalog_rows, run_cli

FIU_RUN: Final = shutil.which("fiu-run")
FIU_CTRL: Final = shutil.which("fiu-ctrl")
GCC: Final = shutil.which("gcc")
EXTRA_POINTS_SOURCE: Final = Path(__file__).with_name("fiu_extra.c")

# libfiu's names for the calls the write path makes (fiu-utils' function_list), and tests/fiu_extra.c's
# for renameat2. `unlink` gets rounds of its own: a spool file whose removal failed can only go at the
# next start. `syncfs` too: a failed sync makes the server refuse durable answers until restarted.
RENAMEAT2_POINT: Final = "posix/io/rename/renameat2"
SYNCFS_POINT: Final = "posix/io/sync/syncfs"
WRITE_POINTS: Final = (
    "posix/io/rw/write",
    "posix/io/rw/writev",
    "posix/io/rw/pwrite",
    "posix/io/sync/fsync",
    "posix/io/sync/fdatasync",
    "posix/io/oc/open",
    "posix/io/dir/rename",
    RENAMEAT2_POINT,
)
UNLINK_POINT: Final = "posix/io/dir/unlink"
ERRNOS: Final = (errno.EIO, errno.ENOSPC)
FAULT_PROBABILITY: Final = 0.01  # per call: a small upload makes about ten, so about one request in five fails
# A failed syncfs is for good (until a restart): likely within its round, if rarely at its very start.
SYNCFS_PROBABILITY: Final = 0.05
ROUNDS: Final = 6  # the first half without unlink faults, the second half with
SYNC_ROUNDS: Final = 1  # then every point and syncfs too, each such round followed by a restart if a sync failed
ROUND_SECONDS: Final = 2.0
CLIENTS: Final = 4
SEED: Final = 20261207
SPOOLED_SIZE: Final = 600 * 1024  # over the in-memory arena limit: goes through a spool file
REQUEST_TIMEOUT: Final = aiohttp.ClientTimeout(total=30)
TUS: Final = {"Tus-Resumable": "1.0.0"}
# What a request may answer while storage calls fail: success, a storage error, or the protocol's
# answer to an upload whose earlier request failed half-way.
OK_STATUSES: Final = frozenset({200, 201, 204, 207})
FAULT_CODES: Final = {500: {"storage_error"}, 507: {"insufficient_storage"}}
UPLOAD_CODES: Final = {409: {"upload_offset_mismatch", "upload_failed"}}


# libuv (under uvloop) aborts the process when a write to its wake-up eventfd fails (uv__async_send),
# a failure no disk can cause; libfiu cannot tell descriptors apart, so the server runs on the stdlib
# loop here (its wake-up is a socket send, which no point below touches).
STDLIB_LOOP_SHIM: Final = '"""uvloop.run on the stdlib loop (tests/test_faults.py)."""\nfrom asyncio import run\n'


# fiu-run sets LD_PRELOAD to libfiu's libraries: this runs the server with the extra points after them.
WITH_EXTRA_PRELOAD: Final = 'preload=$1; shift; export LD_PRELOAD="$LD_PRELOAD $preload"; exec "$@"'


def build_extra_points(directory: Path) -> Path:
    """tests/fiu_extra.c compiled into `directory`: the preload library with renameat2's and syncfs's points."""
    assert GCC is not None, "the test command installs gcc and libc6-dev (scripts/test-packages.txt)"
    library = directory / "fiu_extra.so"
    command = [GCC, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(library), str(EXTRA_POINTS_SOURCE), "-ldl"]
    built = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert built.returncode == 0, built.stderr
    return library


def chance(point: str) -> str:
    return f"probability={SYNCFS_PROBABILITY if point == SYNCFS_POINT else FAULT_PROBABILITY}"


class FaultControl:
    """Failure points of one process started under `fiu-run -x -f PREFIX`, switched with `fiu-ctrl`."""

    def __init__(self, prefix: Path, extra_points: Path) -> None:
        self.prefix = prefix
        self.extra_points = extra_points
        self.enabled: list[str] = []

    def wrapper(self) -> list[str]:
        assert FIU_RUN is not None
        fiu = [FIU_RUN, "-x", "-f", str(self.prefix)]
        return [*fiu, "sh", "-c", WITH_EXTRA_PRELOAD, "sh", str(self.extra_points)]

    def _send(self, pid: int, *commands: str) -> None:
        assert FIU_CTRL is not None
        args = [arg for command in commands for arg in ("-c", command)]
        done = subprocess.run(
            [FIU_CTRL, "-f", str(self.prefix), *args, str(pid)], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "error" not in done.stdout, done.stdout

    def enable(self, pid: int, faults: dict[str, int]) -> None:
        """Each point fails with probability FAULT_PROBABILITY (syncfs: SYNCFS_PROBABILITY), with its errno."""
        self._send(pid, *(f"enable_random name={name},{chance(name)},failinfo={code}" for name, code in faults.items()))
        self.enabled.extend(faults)

    def enable_always(self, pid: int, name: str, code: int) -> None:
        """`name` fails on every call, with errno `code`."""
        self._send(pid, f"enable name={name},failinfo={code}")
        self.enabled.append(name)

    def clear(self, pid: int) -> None:
        if self.enabled:
            self._send(pid, *(f"disable name={name}" for name in self.enabled))
        self.enabled = []


@dataclass
class Tally:
    """What the clients saw: answers by (status, code), and what each answered upload stored."""

    answers: Counter[tuple[int, str]] = field(default_factory=Counter)
    files: Counter[str] = field(default_factory=Counter)  # per-file outcomes inside batch answers
    stored: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes, every upload answered 2xx
    deleted: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)  # content of uploads answered with an error
    unsettled: set[str] = field(default_factory=set)  # a failed delete: present or gone, both are fine
    abandoned: list[str] = field(default_factory=list)  # tus upload paths whose requests failed
    wrong: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.answers.values())

    def fail(self, data: bytes) -> None:
        """An upload of `data` answered with an error: stored or not, either may be true (a record whose
        commit landed before its sync failed is answered with the error), so a delete of it is unsettled."""
        digest = blake3_hex(data)
        self.failed.add(digest)
        if digest in self.deleted:
            self.deleted.discard(digest)
            self.unsettled.add(digest)

    def keep(self, result: dict[str, Any], data: bytes, origin: str) -> None:
        if result.get("status") not in ("stored", "duplicate") or result.get("hash") != blake3_hex(data):
            self.wrong.append(f"{origin}: {result}")
            return
        self.stored[result["hash"]] = data
        self.deleted.discard(result["hash"])
        self.unsettled.discard(result["hash"])


def error_code(document: Any) -> str:
    """The error's code: the JSON error shape's, or for an ingest answer its first failed file's."""
    if not isinstance(document, dict):
        return ""
    if "error" in document:
        return str(document["error"].get("code", ""))
    failed = [result["error"]["code"] for result in document.get("results", []) if result.get("error")]
    return str(failed[0]) if failed else ""


async def answer_of(response: aiohttp.ClientResponse, tally: Tally, origin: str) -> Any:
    """The response's JSON (None for an empty 2xx); any answer outside the contract goes to `tally.wrong`."""
    status = response.status
    body = await response.read()
    if status in OK_STATUSES and not body:
        tally.answers[status, ""] += 1
        return None
    if response.content_type != "application/json":
        tally.answers[status, response.content_type] += 1
        tally.wrong.append(f"{origin}: {status} {response.content_type} {body[:200]!r}")
        return None
    document = json.loads(body)
    code = error_code(document)
    tally.answers[status, code] += 1
    allowed = FAULT_CODES.get(status, set()) | UPLOAD_CODES.get(status, set())
    if status not in OK_STATUSES and code not in allowed:
        tally.wrong.append(f"{origin}: {status} {document}")
    return document


def payload(rng: random.Random) -> bytes:
    return rng.randbytes(SPOOLED_SIZE if rng.random() < 0.15 else rng.randint(1, 48 * 1024))


async def ingest(session: aiohttp.ClientSession, url: str, files: list[bytes], tally: Tally) -> None:
    named = [(f"f{index}.bin", data) for index, data in enumerate(files)]
    async with session.post(url + "/ingest", data=form(named)) as response:
        document = await answer_of(response, tally, "POST /ingest")
    if not isinstance(document, dict) or "results" not in document:
        for data in files:
            tally.fail(data)
        return
    for data, result in zip(files, document["results"], strict=True):
        tally.files[result["status"] if result["status"] != "error" else result["error"]["code"]] += 1
        if result["status"] != "error":
            tally.keep(result, data, "POST /ingest")
            continue
        tally.fail(data)
        if result["error"]["code"] not in FAULT_CODES[500] | FAULT_CODES[507]:
            tally.wrong.append(f"POST /ingest file: {result}")


async def tus_upload(session: aiohttp.ClientSession, url: str, data: bytes, tally: Tally) -> None:
    """Create, then two PATCHes; any failure abandons the upload (terminated once faults stop)."""
    metadata = "filename " + base64.b64encode(b"resumable.bin").decode()
    headers = {**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": metadata}
    async with session.post(url + "/uploads/", headers=headers) as response:
        await answer_of(response, tally, "POST /uploads/")
        if response.status != 201:
            tally.fail(data)
            return
        location = response.headers["Location"]  # a path: a restart after a failed sync changes the port
    half = len(data) // 2
    for offset, chunk in ((0, data[:half]), (half, data[half:])):
        chunk_headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        async with session.patch(url + location, data=chunk, headers=chunk_headers) as response:
            await answer_of(response, tally, "PATCH /uploads/{id}")
            if response.status != 204:
                tally.abandoned.append(location)
                tally.fail(data)
                return
            result = response.headers.get("RhinoBox-Result")
    if result is None:
        tally.wrong.append("PATCH /uploads/{id}: the last byte's answer has no RhinoBox-Result")
        return
    tally.keep(json.loads(result), data, "PATCH /uploads/{id}")


async def delete(session: aiohttp.ClientSession, url: str, digest: str, tally: Tally) -> None:
    async with session.delete(f"{url}/files/{digest}") as response:
        await answer_of(response, tally, "DELETE /files/{hash}")
    del tally.stored[digest]
    if response.status == 204:
        tally.deleted.add(digest)
    else:
        tally.unsettled.add(digest)


async def one_request(
    session: aiohttp.ClientSession, url: str, rng: random.Random, mine: list[bytes], tally: Tally
) -> None:
    """One of: a single upload (sometimes a duplicate), a batch, a resumable upload, a delete."""
    kind = rng.choice(("single", "single", "batch", "tus", "delete"))
    if kind == "delete":
        owned = [blake3_hex(data) for data in mine if blake3_hex(data) in tally.stored]
        if owned:
            await delete(session, url, rng.choice(owned), tally)
            return
        kind = "single"
    if kind == "single":
        data = rng.choice(mine) if mine and rng.random() < 0.2 else payload(rng)
        mine.append(data)
        await ingest(session, url, [data], tally)
    elif kind == "batch":
        files = [payload(rng) for _ in range(rng.randint(2, 6))]
        mine.extend(files)
        await ingest(session, url, files, tally)
    else:
        data = rng.randbytes(rng.randint(64 * 1024, 2 * SPOOLED_SIZE))
        mine.append(data)
        await tus_upload(session, url, data, tally)


async def client(url: str, seed: int, seconds: float, tally: Tally) -> None:
    """Requests for `seconds`; each client has content of its own, so its deletes race nobody's uploads."""
    rng = random.Random(seed)
    mine: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        while loop.time() < deadline:
            try:
                await one_request(session, url, rng, mine, tally)
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.wrong.append(f"no answer: {exc!r}")


async def load(url: str, rng: random.Random, seconds: float, tally: Tally) -> None:
    await asyncio.gather(*(client(url, rng.getrandbits(64), seconds, tally) for _ in range(CLIENTS)))


async def serves_cleanly(url: str, rng: random.Random) -> None:
    """With no faults, each kind of request succeeds at once (the server keeps serving)."""
    tally = Tally()
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        await ingest(session, url, [payload(rng)], tally)
        await ingest(session, url, [payload(rng), payload(rng)], tally)
        await tus_upload(session, url, rng.randbytes(SPOOLED_SIZE), tally)
        await delete(session, url, next(iter(tally.stored)), tally)
    assert tally.wrong == []
    assert {status for status, _ in tally.answers} <= OK_STATUSES, tally.answers


async def terminate(url: str, locations: list[str]) -> None:
    """Drop abandoned resumable uploads (their partial files are state, not leftovers)."""
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        for location in locations:
            async with session.delete(url + location, headers=TUS) as response:
                assert response.status in (204, 404), await response.text()


async def read_back(url: str, tally: Tally) -> list[str]:
    """Digests of answered uploads that do not read back byte-identical (or still read after a delete)."""
    problems = []
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        for digest, data in tally.stored.items():
            async with session.get(f"{url}/files/{digest}") as response:
                if response.status != 200 or await response.read() != data:
                    problems.append(f"{digest}: {response.status}")
        for digest in tally.deleted:
            async with session.get(f"{url}/files/{digest}") as response:
                if response.status != 404:
                    problems.append(f"{digest}: deleted, yet {response.status}")
    return problems


def leftovers(data_dir: Path) -> list[Path]:
    """Spool files, and temporary upload records (`<id>.<pid>.tmp`)."""
    uploads = data_dir / "uploads"
    temporaries = sorted(uploads.glob("*.tmp")) if uploads.exists() else []
    return spool_files(data_dir) + temporaries


def fault_rounds(rng: random.Random) -> Iterator[dict[str, int]]:
    for number in range(ROUNDS + SYNC_ROUNDS):
        points = WRITE_POINTS + ((UNLINK_POINT,) if number >= ROUNDS // 2 else ())
        points += (SYNCFS_POINT,) if number >= ROUNDS else ()
        yield {point: rng.choice(ERRNOS) for point in points}


def server_errors_logged(log_path: Path) -> list[str]:
    """Log lines of errors that escaped the handlers (aiohttp's or the error middleware's catch-all)."""
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if "unhandled error" in line or "Error handling request" in line]


def removals_deferred(log_path: Path) -> int:
    """Blobs whose removal failed and was left for a retry, as logged (a log write can fail too: at least)."""
    return sum("(will retry)" in line for line in log_path.read_text(errors="replace").splitlines())


async def sync_failed(url: str) -> bool:
    """Whether the server says a sync failed (`/healthz` problem `blob_sync`): durable answers are refused."""
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session, session.get(url + "/healthz") as response:
        health = await response.json()
    return "blob_sync" in health["problems"]


@dataclass
class FaultedServer:
    """The server under faults: one process, or the next one when a failed sync needed a restart."""

    server: RhinoBoxProcess
    control: FaultControl
    sync_restarts: list[int] = field(default_factory=list)  # exit status of each process a failed sync stopped

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    async def restart_if_sync_failed(self, rng: random.Random) -> None:
        """After a failed sync: uploads get its storage error until a restart, whose start-up check then runs."""
        if not await sync_failed(self.server.url):
            return
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
            named = [("refused.bin", payload(rng))]
            async with session.post(self.server.url + "/ingest", data=form(named)) as response:
                assert error_code(await response.json()) in FAULT_CODES.get(response.status, set()), response.status
        self.sync_restarts.append(self.server.stop())
        self.server.start()


async def run_faults(faulted: FaultedServer, rng: random.Random, tally: Tally) -> int:
    """The fault rounds; returns the spool files left by failed unlinks (removed at the next start)."""
    data_dir = faulted.server.data_dir
    await serves_cleanly(faulted.server.url, rng)  # also imports every module a request needs before `open` fails
    for number, faults in enumerate(fault_rounds(rng)):
        faulted.control.enable(faulted.pid, faults)
        try:
            await load(faulted.server.url, rng, ROUND_SECONDS, tally)
        finally:
            faulted.control.clear(faulted.pid)
        if SYNCFS_POINT in faults:
            await faulted.restart_if_sync_failed(rng)
        await serves_cleanly(faulted.server.url, rng)
        if UNLINK_POINT not in faults:
            assert leftovers(data_dir) == [], f"round {number} left files behind"
    await terminate(faulted.server.url, tally.abandoned)
    return len(leftovers(data_dir))


async def verify_findings(data_dir: Path) -> list[tuple[str, str]]:
    """`rhinobox verify`'s findings: ("orphan" | "corrupt" | "missing", digest)."""
    verified = await asyncio.to_thread(run_cli, "verify", "--data-dir", str(data_dir))
    findings = [
        (kind, digest)
        for kind, _, digest in (line.partition(" ") for line in verified.stdout.splitlines())
        if kind in ("orphan", "corrupt", "missing")
    ]
    assert verified.returncode == (1 if findings else 0), verified.stdout + verified.stderr
    return findings


async def restart_problems(data_dir: Path, tally: Tally) -> list[str]:
    """Start the server again, without faults, and stop it: what is wrong with what it finds (target none)."""
    problems: list[str] = []
    again = RhinoBoxProcess(data_dir, RHINOBOX_FSYNC="always").start()
    try:
        problems += [f"left over after the start: {path.name}" for path in leftovers(data_dir)]
        rows = catalog_rows(data_dir)
        problems += blob_problems(data_dir, rows)  # catalog rows without an intact blob
        problems += [f"answered, missing after the restart: {digest}" for digest in set(tally.stored) - set(rows)]
        problems += [f"deleted, back after the restart: {digest}" for digest in tally.deleted & set(rows)]
        problems += await read_back(again.url, tally)
    finally:
        status = again.stop()
    return problems + ([f"the restarted server stopped with status {status}"] if status else [])


@dataclass
class Outcome:
    """One run under faults, as seen from outside once the faults stopped and the server did."""

    tally: Tally
    left_by_unlink: int  # spool files whose removal failed: the next start removes them
    unreadable: list[str]  # answered uploads that did not read back
    exit_status: int
    sync_restarts: list[int]  # exit status of each process stopped because a sync had failed
    escaped: list[str]  # log lines of errors no handler answered
    deferred: int  # blob removals that failed and were retried later
    verify_findings: list[tuple[str, str]]  # once the server under faults stopped
    restart_problems: list[str]  # found by a restart without faults
    final_findings: list[tuple[str, str]]  # once that restart stopped

    def figures(self) -> str:
        answers = ", ".join(f"{status} {code or '-'}: {n}" for (status, code), n in sorted(self.tally.answers.items()))
        files = ", ".join(f"{outcome}: {n}" for outcome, n in sorted(self.tally.files.items()))
        findings = Counter(kind for kind, _ in self.verify_findings)
        final = Counter(kind for kind, _ in self.final_findings)
        return (
            f"{ROUNDS + SYNC_ROUNDS} rounds x {ROUND_SECONDS:g} s, {CLIENTS} clients, points {len(WRITE_POINTS)} "
            f"(+ unlink in {ROUNDS + SYNC_ROUNDS - ROUNDS // 2} rounds, + syncfs in {SYNC_ROUNDS} at "
            f"p={SYNCFS_PROBABILITY:g}) at p={FAULT_PROBABILITY:g}, errno EIO/ENOSPC\n"
            f"requests answered: {self.tally.requests}; by status and code: {answers}\n"
            f"files in batch answers: {files}\n"
            f"answers outside the contract: {len(self.tally.wrong)}; answered uploads unreadable: "
            f"{len(self.unreadable)}; spool files left by failed unlinks: {self.left_by_unlink}; "
            f"restarts after a failed sync: {len(self.sync_restarts)}; blob removals deferred: {self.deferred}\n"
            f"verify at stop: {dict(findings) or 'clean'}; problems after a restart: {len(self.restart_problems)}; "
            f"verify after it: {dict(final) or 'clean'}"
        )


async def run_under_faults(tmp_path: Path, rng: random.Random) -> Outcome:
    """Start the server under fiu-run, run the fault rounds, read everything back, stop it, verify;
    then restart it without faults, check the store, stop it and verify again."""
    data_dir = tmp_path / "data"
    control = FaultControl(tmp_path / "fiu", build_extra_points(tmp_path))
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "uvloop.py").write_text(STDLIB_LOOP_SHIM)
    env = {"RHINOBOX_FSYNC": "always", "RHINOBOX_WORKERS": "4", "FIU_PRNG_SEED": str(SEED), "PYTHONPATH": str(shim)}
    tally = Tally()
    faulted = FaultedServer(RhinoBoxProcess(data_dir, wrapper=control.wrapper(), **env).start(), control)
    try:
        left_by_unlink = await run_faults(faulted, rng, tally)
        unreadable = await read_back(faulted.server.url, tally)
    finally:
        exit_status = faulted.server.stop()
    findings = await verify_findings(data_dir)
    log_path = faulted.server.log_path
    escaped, deferred = server_errors_logged(log_path), removals_deferred(log_path)
    problems = await restart_problems(data_dir, tally)
    final = await verify_findings(data_dir)
    return Outcome(
        tally,
        left_by_unlink,
        unreadable,
        exit_status,
        faulted.sync_restarts,
        escaped,
        deferred,
        findings,
        problems,
        final,
    )


def require_tools() -> None:
    installed = "the test command installs fiu-utils, gcc and libc6-dev (scripts/test-packages.txt)"
    assert FIU_RUN is not None, installed
    assert FIU_CTRL is not None, installed
    assert GCC is not None, installed


async def test_storage_faults_answer_json_and_leave_the_store_whole(tmp_path: Path) -> None:
    require_tools()
    outcome = await run_under_faults(tmp_path, random.Random(SEED))
    tally = outcome.tally
    print("\n" + outcome.figures())
    assert tally.wrong == [], "answers outside the contract"
    assert outcome.escaped == [], "errors that no handler answered"
    assert outcome.unreadable == [], "answered uploads that do not read back"
    assert outcome.exit_status == 0, "the server did not stop cleanly"
    # After a failed sync the stop is not clean (the next start checks the store), but it is a stop, not a kill.
    assert all(status > 0 for status in outcome.sync_restarts), outcome.sync_restarts
    assert any(status >= 500 for status, _ in tally.answers), "no fault was ever answered: the test proved nothing"
    # A failed unlink may leave a blob without an entry (a failed request's cleanup, a delete's second
    # step) until its removal is retried: by the stop, or by the next start. Only content of requests
    # answered with an error may be one, and none is left once the server has restarted.
    assert [finding for finding in outcome.verify_findings if finding[0] != "orphan"] == []
    orphans = {digest for _, digest in outcome.verify_findings}
    assert orphans <= tally.failed | tally.unsettled, "a blob without an entry that no failed request explains"
    assert outcome.restart_problems == []
    assert outcome.final_findings == [], "rhinobox verify after the restart"


# -- Each extra failure point really fails the call (tests/fiu_extra.c is in effect) ------------------


async def test_a_failing_renameat2_stores_nothing_until_it_works_again(tmp_path: Path) -> None:
    require_tools()
    control = FaultControl(tmp_path / "fiu", build_extra_points(tmp_path))
    data = random.Random(4).randbytes(4096)
    with RhinoBoxProcess(tmp_path / "data", wrapper=control.wrapper(), RHINOBOX_FSYNC="always") as server:
        assert server.proc is not None
        control.enable_always(server.proc.pid, RENAMEAT2_POINT, errno.EIO)
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
            async with session.post(server.url + "/ingest", data=form([("a.bin", data)])) as response:
                assert (response.status, error_code(await response.json())) == (500, "storage_error")
            assert blob_files(server.data_dir) == {}
            assert spool_files(server.data_dir) == []
            control.clear(server.proc.pid)
            async with session.post(server.url + "/ingest", data=form([("a.bin", data)])) as response:
                assert (await response.json())["results"][0]["status"] == "stored"
    assert set(blob_files(tmp_path / "data")) == {blake3_hex(data)}


async def test_a_failing_syncfs_refuses_durable_answers_until_restarted(tmp_path: Path) -> None:
    require_tools()
    control = FaultControl(tmp_path / "fiu", build_extra_points(tmp_path))
    data = random.Random(5).randbytes(4096)
    server = RhinoBoxProcess(tmp_path / "data", wrapper=control.wrapper(), RHINOBOX_FSYNC="always").start()
    try:
        assert server.proc is not None
        control.enable_always(server.proc.pid, SYNCFS_POINT, errno.EIO)
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
            async with session.post(server.url + "/ingest", data=form([("a.bin", data)])) as response:
                assert (response.status, error_code(await response.json())) == (500, "storage_error")
            control.clear(server.proc.pid)
            assert await sync_failed(server.url)
    finally:
        assert server.stop() != 0, "a run whose sync failed must not stop as if clean"
    with RhinoBoxProcess(tmp_path / "data", RHINOBOX_FSYNC="always") as again:
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
            assert not await sync_failed(again.url)
            async with session.post(again.url + "/ingest", data=form([("a.bin", data)])) as response:
                assert (await response.json())["results"][0]["status"] in ("stored", "duplicate")
            async with session.get(f"{again.url}/files/{blake3_hex(data)}") as response:
                assert await response.read() == data


# -- The cleanup the fault run relies on, without libfiu: a failed record leaves no blob behind --------


async def test_an_upload_whose_record_fails_leaves_no_blob(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    data = random.Random(1).randbytes(SPOOLED_SIZE)
    record_fails_once(monkeypatch, client.app[CATALOG])
    response = await client.post("/ingest", data=form([("a.bin", data)]))
    await assert_error(response, 500, "storage_error")
    assert blob_files(data_dir) == {}
    assert spool_files(data_dir) == []
    again = await client.post("/ingest", data=form([("a.bin", data)]))
    assert (await again.json())["results"][0]["status"] == "stored"
    assert set(blob_files(data_dir)) == {blake3_hex(data)}


async def test_a_failed_record_keeps_a_blob_that_a_row_names(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    data = random.Random(2).randbytes(4096)
    first = await client.post("/ingest", data=form([("a.bin", data)]))
    assert (await first.json())["results"][0]["status"] == "stored"
    record_fails_once(monkeypatch, client.app[CATALOG])
    response = await client.post("/ingest", data=form([("b.bin", data)]))
    await assert_error(response, 500, "storage_error")
    assert set(blob_files(data_dir)) == {blake3_hex(data)}
    assert (await client.get(f"/files/{blake3_hex(data)}")).status == 200


async def test_a_resumable_upload_whose_record_fails_leaves_no_blob(
    aiohttp_client: AiohttpClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    data = random.Random(3).randbytes(100_000)
    created = await client.post("/uploads/", headers={**TUS, "Upload-Length": str(len(data))})
    assert created.status == 201
    record_fails_once(monkeypatch, client.app[CATALOG])
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    response = await client.patch(created.headers["Location"], data=data, headers=headers)
    await assert_error(response, 500, "storage_error")
    assert blob_files(data_dir) == {}
    assert spool_files(data_dir) == []
