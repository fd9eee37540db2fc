"""`fraudops state list|drop|prune`: the online states that model servers share in Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from fraudops.errors import friendly_errors
from fraudops.options import DEFAULT_MODEL_NAME, StoreOpt, store_uri

if TYPE_CHECKING:
    import redis

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


@contextmanager
def _redis(url: str | None) -> Iterator[redis.Redis]:
    """A client of ``url`` (default ``$FRAUDOPS_STATE_REDIS_URL``); Redis failing turns into
    an error that says what to check, as the servers' 503 does."""
    import redis

    from serving.redis_state import failure_of, without_password

    url = url or os.environ.get("FRAUDOPS_STATE_REDIS_URL", "")
    if not url:
        raise StateCommandError(
            "no Redis given: pass --redis-url redis://[user:password@]host:6379/0 or set "
            "FRAUDOPS_STATE_REDIS_URL"
        )
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
    except ValueError as e:
        raise StateCommandError(f"--redis-url {without_password(url)}: {e}") from e
    try:
        yield client
    except redis.RedisError as e:
        raise StateCommandError(str(failure_of(e, without_password(url)))) from e
    finally:
        client.close()


@app.command("list")
@friendly_errors
def list_(name: NameArg = DEFAULT_MODEL_NAME, redis_url: RedisOpt = None) -> None:
    """List the versions of a model with a state in Redis, their sizes and when seeded."""
    from serving.redis_state import stored_versions

    table = Table(title=f"online states of {name}")
    columns = ("version", "seeded", "served by", "customers", "terminals", "customer rows", "keys")
    for column in columns:
        table.add_column(column)
    with _redis(redis_url) as client:
        versions = stored_versions(client, name)
    for v in versions:
        seeded = (
            str(v["seeded"].get("at", "?"))[:19] if v["seeded"] else "no (being seeded, or failed)"
        )
        table.add_row(
            v["version"],
            seeded,
            str(v["served"].get("by", "?")) if v["served"] else "no replica",
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
    from serving.redis_state import drop_version

    uri, aliases = _aliases(store, name)
    if version in aliases and not force:
        raise StateCommandError(
            f"{name} {version} is the {aliases[version]} in {uri}: its servers use this state. "
            "Retire the version first (fraudops rollout ...), or pass --force"
        )
    with _redis(redis_url) as client:
        deleted = drop_version(client, name, version)
    console.print(f"deleted {deleted:,} key(s) of the online state of {name} {version}")


@app.command("prune")
@friendly_errors
def prune(
    name: Annotated[str, typer.Option("--model", help="Model name.")] = DEFAULT_MODEL_NAME,
    redis_url: RedisOpt = None,
    store: StoreOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Delete the states of retired versions: those no alias names and no replica serves.

    A replica marks its version served every minute, for 10 minutes; a version is kept while
    the registry's champion, candidate or canary alias names it, a replica marked it, or a
    replica is seeding it. Run it after a rollout or rollback, or on a schedule (the
    redis-online-state manifests run it every hour).
    """
    import socket

    from serving.redis_state import drop_if_retired, kept_because, stored_versions

    uri, aliases = _aliases(store, name)
    if not aliases:  # a wrong --store or --model would make every version look retired
        raise StateCommandError(
            f"no alias (champion, candidate, canary) of {name} in {uri}: check --store and "
            "--model; prune deletes only versions it can tell are retired"
        )
    dropped = 0
    with _redis(redis_url) as client:
        for v in stored_versions(client, name):
            version = v["version"]
            if version in aliases:
                why: str | None = f"the {aliases[version]}"
            elif dry_run:
                why = kept_because(client, name, version)
            else:
                why = drop_if_retired(client, name, version, socket.gethostname())
            if why:
                console.print(f"kept    {name} {version}: {why}")
                continue
            dropped += 1
            done = "would delete" if dry_run else "deleted"
            console.print(f"{done} {name} {version}: retired ({v['keys']:,} key(s))")
    console.print(
        f"{'would delete' if dry_run else 'deleted'} the states of {dropped} retired version(s)"
    )


def _aliases(store: str | None, name: str) -> tuple[str, dict[str, str]]:
    """The store's URI, and version -> the alias that names it (champion, candidate, canary)."""
    from components.bundle import BundleError, resolve
    from components.store import open_store

    s = open_store(store_uri(store))
    named: dict[str, str] = {}
    for alias in ("champion", "candidate", "canary"):
        try:
            named.setdefault(resolve(s, name, alias), alias)
        except BundleError:
            continue
    return s.uri, named
