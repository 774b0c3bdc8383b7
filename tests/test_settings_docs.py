"""The settings table in docs/configuration.md is the one generated from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhinobox.settings import SETTINGS
from rhinobox.settings_docs import BEGIN, DOCS_PATH, END, REGENERATE, main, render_table, with_table


def test_committed_table_is_the_generated_one() -> None:
    committed = DOCS_PATH.read_text()
    assert with_table(committed, render_table()) == committed, (
        f"the settings table in docs/configuration.md is out of date; regenerate it with: {REGENERATE}"
    )


def test_table_has_a_row_per_setting_with_its_flag_and_default() -> None:
    rows = render_table().splitlines()[3:-1]
    assert len(rows) == len(SETTINGS)
    for spec, row in zip(SETTINGS, rows, strict=True):
        assert row.startswith(f"| `{spec.env}` | ")
        assert (f"`{spec.flag}`" if spec.flag else "none (secret)") in row
        assert spec.help in row
    assert "| `RHINOBOX_WORKERS` | `--workers` | `cores x 2` |" in rows[4]


def test_regenerating_rewrites_only_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "configuration.md"
    doc.write_text(f"# Title\n\nintro\n\n{BEGIN}\n| stale | table |\n{END}\n\n## After\n")
    assert main([str(doc), "--check"]) == 1
    assert REGENERATE in capsys.readouterr().err
    assert main([str(doc)]) == 0
    text = doc.read_text()
    assert text == f"# Title\n\nintro\n\n{render_table()}\n\n## After\n"
    assert main([str(doc), "--check"]) == 0


def test_a_document_without_the_markers_is_left_alone(tmp_path: Path) -> None:
    doc = tmp_path / "configuration.md"
    doc.write_text("# No table here\n")
    assert main([str(doc)]) == 2
    assert doc.read_text() == "# No table here\n"
    with pytest.raises(ValueError, match="markers"):
        with_table("text", render_table())
