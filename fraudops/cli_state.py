"""`fraudops state list|drop`: the online states that model servers share in Redis."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fraudops.errors import friendly_errors
from fraudops.options import DEFAULT_MODEL_NAME, StoreOpt, store_uri

app = typer.Typer(
    help="List and delete the online feature states model versions keep in Redis "
    "(python -m serving --state_redis_url).",
    no_args_is_help=True,
)
console = Console()
NameArg = Annotated[str, typer.Argument(help="Model name.")]
RedisOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="The Redis the servers share their state in. Default: $FRAUDOPS_STATE_REDIS_URL.",
    ),
]


class StateCommandError(ValueError):
    """A state command that cannot run as asked (exit 2 with the message)."""

    user_error = True


def _client(url: str | None):
    import redis

    url = url or os.environ.get("FRAUDOPS_STATE_REDIS_URL", "")
    if not url:
        raise StateCommandError(
            "no Redis given: pass --redis-url redis://[user:password@]host:6379/0 or set "
            "FRAUDOPS_STATE_REDIS_URL"
        )
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)


@app.command("list")
@friendly_errors
def list_(name: NameArg = DEFAULT_MODEL_NAME, redis_url: RedisOpt = None) -> None:
    """List the versions of a model with a state in Redis, their sizes and when seeded."""
    from serving.redis_state import stored_versions

    table = Table(title=f"online states of {name}")
    for column in ("version", "seeded", "customers", "terminals", "customer rows", "keys"):
        table.add_column(column)
    for v in stored_versions(_client(redis_url), name):
        seeded = v["seeded"]["at"][:19] if v["seeded"] else "no (being seeded, or failed)"
        table.add_row(
            v["version"],
            seeded,
            f"{v['customers']:,}",
            f"{v['terminals']:,}",
            f"{v['rows']:,}",
            f"{v['keys']:,}",
        )
    console.print(table)


@app.command("drop")
@friendly_errors
def drop(
    version: Annotated[str, typer.Argument(help="The version whose state to delete, e.g. v3.")],
    name: Annotated[str, typer.Option("--model", help="Model name.")] = DEFAULT_MODEL_NAME,
    redis_url: RedisOpt = None,
    store: StoreOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also when an alias of the registry names it.")
    ] = False,
) -> None:
    """Delete a retired version's state (Redis never evicts it: forgotten versions fill it).

    Refuses a version that the registry's champion, candidate or canary alias names (its
    servers would answer 503 and seed it again), unless --force.
    """
    from components.bundle import BundleError, resolve
    from components.store import open_store
    from serving.redis_state import drop_version

    s = open_store(store_uri(store))
    for alias in ("champion", "candidate", "canary"):
        try:
            named = resolve(s, name, alias)
        except BundleError:
            continue
        if named == version and not force:
            raise StateCommandError(
                f"{name} {version} is the {alias} in {s.uri}: its servers use this state. Retire "
                "the version first (fraudops rollout ...), or pass --force"
            )
    deleted = drop_version(_client(redis_url), name, version)
    console.print(f"deleted {deleted:,} key(s) of the online state of {name} {version}")
