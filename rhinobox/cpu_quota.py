"""The CPU quota of this process's cgroup (`docker run --cpus`, a Kubernetes CPU limit), in cores.

A container limited to 2 CPUs of a 64-core host still sees 64 cores in its affinity, and 64 serving
processes there would share 2 CPUs of time. So the default process count is capped as Go's runtime
caps GOMAXPROCS (Go 1.25): `ceil(quota / period)` of the tightest limit on the way from this process's
cgroup up to the root of the mounted hierarchy (Go floors it at 2, this at 1: one process, no
supervisor). The cgroup comes from `/proc/self/cgroup`; where its hierarchy is mounted (and which
cgroup the mount shows, in a container) from `/proc/self/mountinfo`.
Version 2 (`cpu.max`: `QUOTA PERIOD` or `max PERIOD`) and version 1 (`cpu.cfs_quota_us`, -1 for none,
and `cpu.cfs_period_us`) are read alike; a hierarchy that has the `cpu` controller wins (on a hybrid
host, the v1 one). Anything missing or unreadable is no limit: this only ever lowers a default.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

__all__ = ["CpuCgroup", "cpu_cgroup", "cpu_limit", "quota_cores"]

PROC_SELF: Final = Path("/proc/self")
ROOT: Final = Path("/")
_ESCAPE: Final = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space in a path as \040


@dataclass(frozen=True, slots=True)
class CpuCgroup:
    """This process's cgroup in the hierarchy with the cpu controller: its directory and the mount's."""

    version: int  # 1 or 2
    mount_point: Path  # the top of the hierarchy as this process can see it
    directory: Path  # this process's cgroup, at or under `mount_point`


def _own_cgroup(proc_self: Path) -> tuple[int, str] | None:
    """(version, path) of this process's cgroup: v1's `cpu` hierarchy if there is one, else v2's."""
    unified = None
    for line in (proc_self / "cgroup").read_text().splitlines():
        hierarchy_id, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy_id == "0" and not controllers:
            unified = path
        elif "cpu" in controllers.split(","):
            return 1, path
    return None if unified is None else (2, unified)


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda octal: chr(int(octal.group(1), 8)), text)


def _mounts(proc_self: Path, version: int) -> list[tuple[str, str]]:
    """(root, mount point) of each mount of the hierarchy: cgroup2, or the v1 one with `cpu`."""
    found = []
    for line in (proc_self / "mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")  # ID PARENT DEV ROOT POINT ... - FSTYPE SOURCE OPTIONS
        mount, described = fields.split(), tail.split()
        if len(mount) < 5 or len(described) < 3:
            continue
        fstype, options = described[0], described[2].split(",")
        if (version == 2 and fstype == "cgroup2") or (version == 1 and fstype == "cgroup" and "cpu" in options):
            found.append((_unescape(mount[3]), _unescape(mount[4])))
    return found


def _relative(path: str, mount_root: str) -> PurePosixPath | None:
    """`path` below `mount_root`, or None where the mount does not show it (another container's)."""
    cgroup, top = PurePosixPath(path), PurePosixPath(mount_root)
    if ".." in cgroup.parts or not cgroup.is_relative_to(top):
        return None
    return cgroup.relative_to(top)


def cpu_cgroup(proc_self: Path = PROC_SELF, root: Path = ROOT) -> CpuCgroup | None:
    """Where this process's CPU limits are, with mount points taken under `root`; None if nowhere seen."""
    try:
        own = _own_cgroup(proc_self)
        if own is None:
            return None
        version, path = own
        for mount_root, mount_point in _mounts(proc_self, version):
            relative = _relative(path, mount_root)
            if relative is not None:
                top = root / mount_point.lstrip("/")
                return CpuCgroup(version, top, top / relative)
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _read_limit(directory: Path, version: int) -> float | None:
    """The cores one cgroup's own quota allows, or None (no quota, no file, or unreadable)."""
    try:
        if version == 2:
            quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
            quota_us, period_us = (-1 if quota == "max" else int(quota)), int(period or "100000")
        else:
            quota_us = int((directory / "cpu.cfs_quota_us").read_text())
            period_us = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def cpu_limit(proc_self: Path = PROC_SELF, root: Path = ROOT) -> float | None:
    """The cores of CPU time this process may use (the tightest quota up its cgroups), or None for no limit."""
    cgroup = cpu_cgroup(proc_self, root)
    if cgroup is None:
        return None
    limits = []
    directory = cgroup.directory
    while True:
        limit = _read_limit(directory, cgroup.version)
        if limit is not None:
            limits.append(limit)
        if directory == cgroup.mount_point:
            break
        directory = directory.parent
    return min(limits, default=None)


def quota_cores(proc_self: Path = PROC_SELF, root: Path = ROOT) -> int | None:
    """`cpu_limit` rounded up to whole cores (at least 1): 1.5 CPUs keep 2 processes busy; None for no limit."""
    limit = cpu_limit(proc_self, root)
    return None if limit is None else max(1, math.ceil(limit))
