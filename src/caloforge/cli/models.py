"""``caloforge models``: the registered model types and the shipped pretrained models."""

from __future__ import annotations

import json
from typing import Any

import typer

from caloforge.cli._common import user_errors


def models(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
) -> None:
    """List the model types 'caloforge train --model' accepts and the models shipped with caloforge."""
    _run(as_json)


@user_errors
def _run(as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from caloforge.models.capabilities import capabilities
    from caloforge.models.pretrained import list_pretrained
    from caloforge.models.registry import available_models, get_model_class

    registered: dict[str, dict[str, Any]] = {}
    for name in available_models():
        cls = get_model_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        registered[name] = {
            "summary": doc[0] if doc else "",
            "default_config": cls.Config().to_dict(),
            "presets": cls.Config.presets(),
            "capabilities": capabilities(cls),
        }
    shipped: dict[str, dict[str, Any]] = {}
    for name, meta in list_pretrained().items():
        geometry = meta.get("geometry", {})
        shipped[name] = {
            "model": meta.get("model"),
            "geometry": geometry.get("builtin") or geometry.get("name"),
            "n_parameters": meta.get("n_parameters"),
            "description": meta.get("description", ""),
            "path": meta.get("path"),
        }
    if as_json:
        typer.echo(json.dumps({"registered": registered, "pretrained": shipped}, indent=2))
        return
    out = Console()
    t = Table(title="registered models (caloforge train --model NAME)", title_justify="left")
    t.add_column("name", style="bold")
    t.add_column("description")
    t.add_column("capabilities")
    t.add_column("default config (presets)")
    for name, d in registered.items():
        t.add_row(name, d["summary"], ", ".join(d["capabilities"]),
                  f"{json.dumps(d['default_config'])} ({', '.join(d['presets'])})")
    out.print(t)
    if not shipped:
        out.print("no pretrained models are shipped with this installation")
        return
    t = Table(title="pretrained models (caloforge generate NAME ...)", title_justify="left")
    for col in ("name", "model", "geometry", "parameters", "description"):
        t.add_column(col, style="bold" if col == "name" else None)
    for name, d in shipped.items():
        n = d["n_parameters"]
        t.add_row(name, str(d["model"]), str(d["geometry"]), f"{n:,}" if isinstance(n, int) else "?", d["description"])
    out.print(t)
