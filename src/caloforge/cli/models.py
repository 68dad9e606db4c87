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
    if out.width < WIDE:
        _compact(out, registered, shipped)
        return
    t = Table(title="registered models (caloforge train --model NAME)", title_justify="left")
    t.add_column("name", style="bold", no_wrap=True, min_width=_longest(registered))
    t.add_column("description", ratio=3)
    t.add_column("capabilities", ratio=2)
    t.add_column("presets", no_wrap=True)
    for name, d in registered.items():
        t.add_row(name, d["summary"], ", ".join(d["capabilities"]), ", ".join(d["presets"]))
    out.print(t)
    out.print("default configurations: caloforge models --json", highlight=False)
    if not shipped:
        out.print("no pretrained models are shipped with this installation")
        return
    t = Table(title="pretrained models (caloforge generate NAME ...)", title_justify="left")
    t.add_column("name", style="bold", no_wrap=True, min_width=_longest(shipped))
    t.add_column("model", no_wrap=True)
    t.add_column("geometry", no_wrap=True)
    t.add_column("parameters", no_wrap=True, justify="right")
    t.add_column("description")
    for name, d in shipped.items():
        t.add_row(name, str(d["model"]), str(d["geometry"]), _count(d["n_parameters"]), d["description"])
    out.print(t)


#: Terminal columns from which the tables are used; narrower terminals get one entry per
#: paragraph, so that the names that must be typed are never cut or wrapped.
WIDE = 120


def _longest(entries: dict) -> int:
    return max((len(k) for k in entries), default=4)


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _compact(out: Any, registered: dict[str, dict[str, Any]], shipped: dict[str, dict[str, Any]]) -> None:
    """One paragraph per model: its name alone on a line, the rest indented below."""
    from rich.markup import escape
    from rich.padding import Padding

    def entry(name: str, lines: list[str]) -> None:
        out.print(f"[bold]{escape(name)}[/]", highlight=False, overflow="ignore", crop=False, soft_wrap=True)
        for line in lines:
            out.print(Padding(escape(line), (0, 0, 0, 4)), highlight=False)

    out.print("[bold underline]registered models[/] (caloforge train --model NAME)", highlight=False)
    for name, d in registered.items():
        entry(name, [d["summary"], f"capabilities: {', '.join(d['capabilities']) or '-'}; "
                                   f"presets: {', '.join(d['presets'])}"])
    out.print("default configurations: caloforge models --json", highlight=False)
    if not shipped:
        out.print("no pretrained models are shipped with this installation")
        return
    out.print()
    out.print("[bold underline]pretrained models[/] (caloforge generate NAME ...)", highlight=False)
    for name, d in shipped.items():
        entry(name, [f"{d['model']} model, {d['geometry']}, {_count(d['n_parameters'])} parameters", d["description"]])
