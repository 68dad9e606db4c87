"""``caloforge models`` never cuts or wraps the names that must be typed, at 80 columns or wide."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from caloforge.cli.main import app


@pytest.mark.parametrize("columns", [60, 80, 119, 120, 200])
def test_models_names_whole_at_any_width(columns):
    r = CliRunner(env={"COLUMNS": str(columns)}).invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    listing = json.loads(CliRunner().invoke(app, ["models", "--json"]).stdout)
    names = [*listing["registered"], *listing["pretrained"]]
    assert names and "ds2-electrons-teacher" in names
    lines = r.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= max(columns, max(map(len, names)))
    cells = set()
    for line in lines:  # a name is a whole line (narrow) or a whole first table cell (wide)
        stripped = line.strip()
        cells.add(stripped)
        if stripped.startswith("│"):
            cells.add(stripped.split("│")[1].strip())
    for name in names:
        assert name in cells, (name, r.stdout)
    assert "…" not in r.stdout  # nothing truncated
