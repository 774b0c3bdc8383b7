"""The cgroup CPU quota caps the default process count: trees written in tmp_path, then the real kernel's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest

from rhinobox.cpu_quota import CpuCgroup, cpu_cgroup, cpu_limit, quota_cores
from rhinobox.settings import Settings, usable_cores
from tests.helpers import wait_until
from tests.server_process import RhinoBoxProcess
from tests.test_processes import members

V2_MOUNT: Final = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n"
V1_CPU_MOUNT: Final = "32 31 0:29 {root} {point} rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
OTHER_MOUNTS: Final = (
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory\n"
)
WAIT_S: Final = 20.0  # bound on a server's start and first log lines: a hang fails the test
PERIOD_US: Final = 100_000


def _fake_machine(tmp_path: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    """`tmp_path` as a machine's root: /proc/self/{cgroup,mountinfo}, and `files` (path: text) under it."""
    proc_self = tmp_path / "proc" / "self"
    proc_self.mkdir(parents=True)
    (proc_self / "cgroup").write_text(cgroup)
    (proc_self / "mountinfo").write_text(OTHER_MOUNTS + mountinfo)
    for name, text in files.items():
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc_self


def _v2(tmp_path: Path, limits: dict[str, str], path: str = "/kubepods/pod1/app") -> float | None:
    """The limit read on a cgroup v2 machine whose `cpu.max` files, by cgroup, are `limits`."""
    files = {f"/sys/fs/cgroup{cgroup}/cpu.max": text for cgroup, text in limits.items()}
    (tmp_path / f"sys/fs/cgroup{path}").mkdir(parents=True, exist_ok=True)
    proc_self = _fake_machine(tmp_path, f"0::{path}\n", V2_MOUNT, files)
    return cpu_limit(proc_self, tmp_path)


def test_v2_quota_over_period_in_cores_rounded_up(tmp_path: Path) -> None:
    assert _v2(tmp_path, {"/kubepods/pod1/app": "150000 100000\n"}) == 1.5
    assert quota_cores(tmp_path / "proc" / "self", tmp_path) == 2


def test_v2_max_is_no_limit(tmp_path: Path) -> None:
    assert _v2(tmp_path, {"/kubepods/pod1/app": "max 100000\n", "/kubepods": "max 100000\n"}) is None
    assert quota_cores(tmp_path / "proc" / "self", tmp_path) is None


def test_v2_the_tightest_of_the_cgroup_and_its_ancestors_wins(tmp_path: Path) -> None:
    limits = {"/kubepods/pod1/app": "800000 100000\n", "/kubepods/pod1": "max 100000\n", "/kubepods": "25000 50000\n"}
    assert _v2(tmp_path, limits) == 0.5
    assert quota_cores(tmp_path / "proc" / "self", tmp_path) == 1  # never 0 processes


def test_v2_an_unreadable_level_does_not_hide_the_others(tmp_path: Path) -> None:
    assert _v2(tmp_path, {"/kubepods/pod1/app": "garbage\n", "/kubepods/pod1": "300000 100000\n"}) == 3.0


def test_v2_in_a_cgroup_namespace_the_mount_shows_the_own_cgroup_at_the_top(tmp_path: Path) -> None:
    """A container with its own cgroup namespace: `0::/`, and its limit in /sys/fs/cgroup/cpu.max."""
    assert _v2(tmp_path, {"/": "200000 100000\n"}, path="/") == 2.0


def test_v1_quota_and_period_files(tmp_path: Path) -> None:
    mount = V1_CPU_MOUNT.format(root="/", point="/sys/fs/cgroup/cpu,cpuacct")
    files = {
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n",
    }
    proc_self = _fake_machine(tmp_path, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n", mount, files)
    assert cpu_limit(proc_self, tmp_path) == 2.5
    assert quota_cores(proc_self, tmp_path) == 3


def test_v1_minus_one_is_no_limit(tmp_path: Path) -> None:
    mount = V1_CPU_MOUNT.format(root="/", point="/sys/fs/cgroup/cpu")
    files = {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}
    proc_self = _fake_machine(tmp_path, "4:cpu:/\n", mount, files)
    assert cpu_limit(proc_self, tmp_path) is None


def test_v1_a_container_mount_shows_its_own_cgroup_and_nothing_above(tmp_path: Path) -> None:
    """Docker without a cgroup namespace: /proc says /docker/abc, the mount's root is that cgroup."""
    point = "/sys/fs/cgroup/cpu with space"
    mount = V1_CPU_MOUNT.format(root="/docker/abc", point=point.replace(" ", "\\040"))
    files = {
        f"{point}/cpu.cfs_quota_us": "50000\n",
        f"{point}/cpu.cfs_period_us": "100000\n",
        # Above the mount point is no cgroup at all: a file there is never read.
        "/sys/fs/cgroup/cpu.cfs_quota_us": "1000\n",
        "/sys/fs/cgroup/cpu.cfs_period_us": "100000\n",
    }
    proc_self = _fake_machine(tmp_path, "4:cpu,cpuacct:/docker/abc\n", mount, files)
    assert cpu_cgroup(proc_self, tmp_path) == CpuCgroup(1, tmp_path / point.lstrip("/"), tmp_path / point.lstrip("/"))
    assert cpu_limit(proc_self, tmp_path) == 0.5


def test_on_a_hybrid_host_the_hierarchy_with_the_cpu_controller_is_read(tmp_path: Path) -> None:
    mount = V1_CPU_MOUNT.format(root="/", point="/sys/fs/cgroup/cpu") + V2_MOUNT.replace(
        "/sys/fs/cgroup ", "/sys/fs/cgroup/unified "
    )
    files = {
        "/sys/fs/cgroup/cpu/app/cpu.cfs_quota_us": "400000\n",
        "/sys/fs/cgroup/cpu/app/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/unified/app/cpu.max": "100000 100000\n",  # not where the cpu controller is
    }
    proc_self = _fake_machine(tmp_path, "1:cpu:/app\n0::/app\n", mount, files)
    assert cpu_limit(proc_self, tmp_path) == 4.0


def test_missing_files_and_foreign_cgroups_are_no_limit(tmp_path: Path) -> None:
    assert cpu_limit(tmp_path / "proc" / "self", tmp_path) is None  # no /proc at all
    proc_self = _fake_machine(tmp_path, "0::/app\n", V2_MOUNT, {})
    assert cpu_limit(proc_self, tmp_path) is None  # no cpu.max anywhere
    other = tmp_path / "other"
    mount = V1_CPU_MOUNT.format(root="/docker/other", point="/sys/fs/cgroup/cpu")
    files = {"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "1000\n", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}
    proc_self = _fake_machine(other, "4:cpu:/docker/abc\n", mount, files)
    assert cpu_cgroup(proc_self, other) is None  # the mount shows another container's cgroup
    assert cpu_limit(proc_self, other) is None


def test_this_machine_default_is_its_affinity_capped_by_its_cgroup_quota() -> None:
    """What the real /proc and /sys say, here: the default process count follows it."""
    affinity = len(os.sched_getaffinity(0))
    quota = quota_cores()
    expected = affinity if quota is None else min(affinity, quota)
    assert usable_cores() == expected
    assert Settings.load(environ={"RHINOBOX_PROCESSES": ""}).processes == expected
    assert cpu_cgroup() is not None, "no cgroup hierarchy with the cpu controller is mounted on this machine"


# -- A real cgroup with a quota (root, a writable cgroup hierarchy) ---------------------------------


@pytest.fixture
def quota_cgroup() -> Iterator[Callable[[int], Path]]:
    """Makes a cgroup limited to N cores with a child cgroup inside it; returns the child's `cgroup.procs`.

    The limit sits on the parent, so the reading must go up the hierarchy. This test process stays
    where it is; only the processes the test starts through `sh` enter the child.
    """
    own = cpu_cgroup()
    assert own is not None, "no cgroup hierarchy with the cpu controller is mounted on this machine"
    made: list[Path] = []

    def make(cores: int) -> Path:
        parent = own.directory / f"rhinobox-test-{uuid.uuid4().hex[:12]}"
        parent.mkdir()  # needs root and a writable hierarchy: the kernel is what this test is about
        made.append(parent)
        if own.version == 2:
            if not (parent / "cpu.max").exists():
                (own.directory / "cgroup.subtree_control").write_text("+cpu")
            (parent / "cpu.max").write_text(f"{cores * PERIOD_US} {PERIOD_US}")
        else:
            (parent / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (parent / "cpu.cfs_quota_us").write_text(str(cores * PERIOD_US))
        child = parent / "inner"
        child.mkdir()
        made.insert(0, child)
        return child / "cgroup.procs"

    yield make
    for directory in made:  # children first; every process the test started there has exited
        directory.rmdir()


def _inside(procs: Path) -> list[str]:
    """A wrapper that moves itself into the cgroup of `procs`, then execs the command after it."""
    return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs)]


def _fewer_cores() -> int:
    """A quota below this machine's cores where it has several (1 on a 1-core machine, which cannot tell)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def test_a_process_in_a_cgroup_with_a_quota_counts_it(quota_cgroup: Callable[[int], Path]) -> None:
    cores = _fewer_cores()
    procs = quota_cgroup(cores)
    code = "from rhinobox.settings import Settings; print(Settings.load(environ={}).processes)"
    result = subprocess.run([*_inside(procs), sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(cores)], result.stderr


async def test_a_server_started_in_a_cgroup_with_a_quota_starts_that_many_processes(
    tmp_path: Path, quota_cgroup: Callable[[int], Path]
) -> None:
    cores = _fewer_cores()
    procs = quota_cgroup(cores)
    with RhinoBoxProcess(tmp_path / "data", wrapper=_inside(procs), RHINOBOX_PROCESSES="") as server:
        # The supervisor prints its banner once every member serves; a single server has no children.
        assert len(members(server)) == (cores if cores > 1 else 0)
        started: list[str] = []

        def serving_line() -> bool:
            lines = server.log_path.read_text().splitlines()
            started[:] = [json.loads(line)["msg"] for line in lines if '"serving data in ' in line]
            return bool(started)

        assert await wait_until(serving_line, WAIT_S), server.log_path.read_text()
        assert started[0].endswith(f"with {cores} processes" if cores > 1 else "workers"), started
