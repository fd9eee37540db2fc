"""`fraudops model list|show|alias`: the registry."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fraudops.errors import friendly_errors
from fraudops.options import DEFAULT_MODEL_NAME, StoreOpt, store_uri

app = typer.Typer(help="List, inspect and alias registered model bundles.", no_args_is_help=True)
console = Console()
NameArg = Annotated[str, typer.Argument(help="Model name.")]


@app.command("list")
@friendly_errors
def list_(name: NameArg = DEFAULT_MODEL_NAME, store: StoreOpt = None) -> None:
    """List the versions of a model with their metrics and aliases."""
    from components.bundle import BundleError, list_versions, resolve
    from components.store import open_store

    s = open_store(store_uri(store))
    aliases = {}
    for alias in ("champion", "candidate", "canary"):
        try:
            aliases.setdefault(resolve(s, name, alias), []).append(alias)
        except BundleError:  # an alias that is not set is simply not shown
            continue
    table = Table(title=f"{name} in {s.uri}")
    for column in ("version", "created", "type", "test AP", "ROC-AUC", "aliases"):
        table.add_column(column)
    for version in list_versions(s, name):
        m = s.get_json(f"models/{name}/{version}/MANIFEST.json")
        table.add_row(
            version,
            m["created_at"][:19],
            m.get("model_type", "?"),
            f"{m['metrics']['average_precision']:.4f}",
            f"{m['metrics']['roc_auc']:.4f}",
            ", ".join(aliases.get(version, [])),
        )
    console.print(table)


@app.command("show")
@friendly_errors
def show(
    name: NameArg = DEFAULT_MODEL_NAME,
    ref: Annotated[str, typer.Argument(help="Version, alias or 'latest'.")] = "champion",
    store: StoreOpt = None,
) -> None:
    """Verify a bundle's checksums and print its model card."""
    from components.bundle import fetch_bundle
    from components.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        bundle = fetch_bundle(open_store(store_uri(store)), name, ref, Path(tmp))
        console.print(
            f"[green]verified[/] {len(bundle.manifest['files'])} files of {name} {bundle.version}"
        )
        console.print((bundle.folder / "model_card.md").read_text(), markup=False)


@app.command("alias")
@friendly_errors
def alias(
    name: NameArg,
    alias_name: Annotated[
        str, typer.Argument(metavar="ALIAS", help="champion, candidate or canary.")
    ],
    version: Annotated[str, typer.Argument(help="Version to point at.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")] = "manual",
    store: StoreOpt = None,
) -> None:
    """Point an alias at a version (recorded in the audit log)."""
    from components.bundle import set_alias
    from components.store import open_store

    pointer = set_alias(open_store(store_uri(store)), name, alias_name, version, reason)
    console.print(json.dumps(pointer, indent=2))
