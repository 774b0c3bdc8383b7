"""The page's own logic (progress aggregation, the upload queue) under Node's test runner."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

WEB_DIR: Final = Path(__file__).resolve().parents[1] / "web"
NODE_TIMEOUT_S: Final = 120


def test_front_end_unit_tests_pass() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    assert node is not None, "Node.js is missing: scripts/bootstrap.sh installs it"
    tests = sorted(str(path.relative_to(WEB_DIR)) for path in (WEB_DIR / "test").glob("*.test.js"))
    assert len(tests) >= 2
    run = subprocess.run(
        [node, "--test", "--test-reporter=tap", *tests],
        cwd=WEB_DIR,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    passed = re.search(r"^# pass (\d+)$", run.stdout, re.MULTILINE)
    assert passed is not None
    assert int(passed.group(1)) >= 10
    assert re.search(r"^# fail 0$", run.stdout, re.MULTILINE)
