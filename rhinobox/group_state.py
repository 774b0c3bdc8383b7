"""What the supervisor and the serving processes of one data directory share, as files in `<data_dir>/group/`.

Where several servers share the data directory, each group keeps these in its own directory instead
(`<data_dir>/instances/<id>/group/`, rhinobox.instances): the functions below take that directory.

- `reconcile.json`: the start-up reconciliation's report, which the supervisor runs once and every
  process shows in `/healthz` (`SharedReconcileReport` reads it when asked);
- `metrics/`: prometheus-client's multiprocess files, so `/metrics` on any process reports the whole server;
- `blob-sync`: the serving processes' turns at the filesystem sync, one covering them all
  (rhinobox.blobs.shared_sync), created here so that a later single server never takes an old one;
- the run marker's time (rhinobox.runmarker), moved up by whichever process completed a sync
  (`MarkerClock`): a filesystem sync covers every process's renames before it began.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Final

from rhinobox.blobs.shared_sync import GROUP_DIRNAME, create_sync_record
from rhinobox.reconcile import ReconcileReport
from rhinobox.runmarker import ADVANCE_SECONDS, RUN_MARKER_FILENAME

__all__ = [
    "GROUP_DIRNAME",
    "MarkerClock",
    "SharedReconcileReport",
    "metrics_dir",
    "remove_spool_of",
    "reset_group_dir",
    "write_reconcile_report",
]

log = logging.getLogger(__name__)

RECONCILE_FILENAME: Final = "reconcile.json"
METRICS_DIRNAME: Final = "metrics"


def group_dir(data_dir: Path) -> Path:
    return data_dir / GROUP_DIRNAME


def metrics_dir(data_dir: Path) -> Path:
    """Where the serving processes keep their metric values (PROMETHEUS_MULTIPROC_DIR)."""
    return group_dir(data_dir) / METRICS_DIRNAME


def reset_group_dir(data_dir: Path) -> None:
    """Start a run with no metrics or report of an earlier one (the supervisor, under the data dir lock)."""
    base = group_dir(data_dir)
    shutil.rmtree(base, ignore_errors=True)
    metrics_dir(data_dir).mkdir(parents=True)
    create_sync_record(base)


def write_reconcile_report(data_dir: Path, report: ReconcileReport) -> None:
    """Replace the shared report atomically (readers never see half of one)."""
    path = group_dir(data_dir) / RECONCILE_FILENAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.as_json()), "utf-8")
    os.replace(tmp, path)


class SharedReconcileReport(ReconcileReport):
    """The supervisor's report, read from its file on each `/healthz` (a few hundred bytes)."""

    __slots__ = ("data_dir",)

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = data_dir

    def as_json(self) -> dict[str, Any]:
        path = group_dir(self.data_dir) / RECONCILE_FILENAME
        try:
            shown: dict[str, Any] = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return super().as_json()  # not written yet: pending
        self.state = str(shown.get("state", self.state))
        return shown


class MarkerClock:
    """`RunMarker.advance` for a serving process: the supervisor created the marker and removes it."""

    def __init__(self, data_dir: Path) -> None:
        self._dirfd: int | None = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._advanced = 0.0

    def advance(self, synced_before: float) -> None:
        """Every blob named before `synced_before` is durable (called after each sync; at most once a second)."""
        if synced_before - self._advanced < ADVANCE_SECONDS or self._dirfd is None:
            return
        try:
            os.utime(RUN_MARKER_FILENAME, (synced_before, synced_before), dir_fd=self._dirfd, follow_symlinks=False)
        except OSError as exc:  # an older time only widens the next check: never worth failing a sync
            log.warning("could not update the run marker's time: %s", exc)
            return
        self._advanced = synced_before

    def close(self) -> None:
        if self._dirfd is not None:
            os.close(self._dirfd)
            self._dirfd = None


def remove_spool_of(spool_dir: Path, pid: int) -> int:
    """Remove the spool files of a serving process that died (their names begin with its pid in hex)."""
    prefix = f"{pid:x}-"
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(spool_dir):
            if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
