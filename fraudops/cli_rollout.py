"""`fraudops rollout start|status|promote|rollback`: canary rollouts with automated analysis."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fraudops.errors import friendly_errors
from fraudops.options import DEFAULT_MODEL_NAME, StoreOpt, store_uri

HELP = (
    "Canary rollouts: deploy a version beside the stable one, move traffic to it step by "
    "step, judge every step against the stable version, and promote or roll back.\n\n"
    "Local mode (default) drives the local gateway (--gateway); cluster mode (--cluster) "
    "patches the KServe InferenceService's canaryTrafficPercent through the Kubernetes API. "
    "See docs/rollout.md."
)
app = typer.Typer(help=HELP, no_args_is_help=True)
console = Console()
ROLLED_BACK_EXIT = 3
START_HELP = (
    "Deploy --version as a canary and walk the steps, each gated by the canary analysis.\n\n"
    "Every step lets traffic flow for --step-seconds, then compares canary and stable on that "
    "window: error rate, p99 latency, score distribution (PSI), alert-rate ratio, and "
    "precision and recall once labels have arrived. A failed step rolls back at once; an "
    "inconclusive one (too little traffic) is extended, then rolled back. Every decision and "
    "its numbers go to the audit log.\n\n"
    "Exits 0 when the canary was promoted, 3 when it was rolled back, 2 on a usage or "
    "configuration error."
)
STATUS_HELP = (
    "Who serves what now, and the latest rollout's steps with their verdicts.\n\n"
    "The first table is the live split (stable and canary version, share of traffic). The "
    "second lists every analysed window of the latest rollout: the share, the verdict, the "
    "requests and the key numbers (canary error rate, p99 ms, score PSI, alert-rate ratio); "
    "FAIL marks a check that failed, ? one that lacked data, - one not available in this "
    "mode. Each window's one-line reason follows."
)

GatewayOpt = Annotated[
    str | None,
    typer.Option(
        "--gateway",
        help="Local gateway URL (default: $FRAUDOPS_GATEWAY_URL or http://127.0.0.1:8080).",
    ),
]
ClusterOpt = Annotated[
    bool,
    typer.Option(
        "--cluster",
        help="Cluster mode: patch the KServe InferenceService instead of the local gateway.",
    ),
]
IsvcOpt = Annotated[str, typer.Option("--isvc", help="InferenceService name (cluster mode).")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="Its namespace.")]
KubeconfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig", help="Kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster)."
    ),
]
ContextOpt = Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")]
ModelOpt = Annotated[str, typer.Option("--model-name", help="Registry name of the model.")]


def _target(
    gateway: str | None,
    cluster: bool,
    isvc: str,
    namespace: str,
    kubeconfig: Path | None,
    context: str | None,
    store: Any = None,
    model: str = DEFAULT_MODEL_NAME,
) -> Any:
    if cluster and gateway:
        raise typer.BadParameter(
            "use either --gateway (local) or --cluster", param_hint="--cluster"
        )
    if not cluster:
        from monitoring.rollout_local import LocalGatewayTarget

        url = gateway or os.environ.get("FRAUDOPS_GATEWAY_URL") or "http://127.0.0.1:8080"
        return LocalGatewayTarget(url)
    from monitoring.rollout_cluster import InferenceServiceTarget

    uri_for = None
    if store is not None and store.uri.startswith("s3://"):

        def uri_for(version: str) -> str:
            return store.url_for(f"models/{model}/{version}")

    return InferenceServiceTarget.connect(
        isvc,
        namespace,
        kubeconfig=str(kubeconfig) if kubeconfig else None,
        context=context,
        uri_for=uri_for,
    )


@app.command("start", help=START_HELP)
@friendly_errors
def start(
    version: Annotated[
        str, typer.Option("--version", help="Version to roll out (v4, latest, or an alias).")
    ],
    model_name: ModelOpt = DEFAULT_MODEL_NAME,
    gateway: GatewayOpt = None,
    cluster: ClusterOpt = False,
    isvc: IsvcOpt = "fraud-detector",
    namespace: NamespaceOpt = "fraudops",
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            "--prometheus-url",
            help="Cluster mode: Prometheus for errors and latency. Without it, latency comes "
            "from the inference log and errors are not judged.",
        ),
    ] = None,
    steps: Annotated[
        str,
        typer.Option(
            help="Canary shares in percent, increasing. Each share below 100 is analysed, "
            "then the canary is promoted."
        ),
    ] = "10,50,100",
    step_seconds: Annotated[
        float,
        typer.Option(
            help="Analysis window per step, seconds (cluster: at least 2 scrape intervals)."
        ),
    ] = 60.0,
    max_extensions: Annotated[
        int,
        typer.Option(
            help="An inconclusive step (too little traffic) gets this many more windows, then "
            "rolls back."
        ),
    ] = 2,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="YAML file of analysis thresholds (docs/rollout.md lists them)."
        ),
    ] = None,
    log_delay: Annotated[
        float,
        typer.Option(help="Seconds to wait after a window for the servers to flush the log."),
    ] = 5.0,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds for the canary to start serving.")
    ] = 300.0,
    labels: Annotated[
        bool,
        typer.Option(help="Compare precision and recall once enough labels have arrived."),
    ] = True,
    store: StoreOpt = None,
) -> None:
    """Deploy a version as a canary and walk the steps (see ``START_HELP``)."""
    from components.store import open_store
    from monitoring.canary import load_thresholds
    from monitoring.rollout import parse_steps, run_rollout
    from monitoring.rollout_metrics import GatewayMetrics, LogOnlyMetrics, PrometheusMetrics

    shares = parse_steps(steps)
    thresholds = load_thresholds(config)
    s = open_store(store_uri(store))
    target = _target(gateway, cluster, isvc, namespace, kubeconfig, context, s, model_name)
    if not cluster:
        metrics: Any = GatewayMetrics(target)
    elif prometheus_url:
        metrics = PrometheusMetrics(prometheus_url, matchers={"namespace": namespace})
        if step_seconds < 60:
            console.print(
                f"warning: --step-seconds {step_seconds:g} is short for Prometheus (scrapes every "
                "30 s); windows may show no requests and be extended",
                markup=False,
            )
    else:
        metrics = LogOnlyMetrics()
    result = run_rollout(
        target,
        metrics,
        store=s,
        model=model_name,
        version=version,
        steps=shares,
        step_seconds=step_seconds,
        thresholds=thresholds,
        max_extensions=max_extensions,
        log_delay_seconds=log_delay,
        ready_timeout=ready_timeout,
        use_labels=labels,
        log=lambda line: console.print(line, markup=False, highlight=False),
    )
    table = Table(title=f"rollout {result.rollout_id}: {model_name} {result.canary_version}")
    for column in ("step", "window", "verdict", "reason"):
        table.add_column(column, overflow="fold")
    for record in result.steps:
        table.add_row(
            f"{record.percent}%",
            f"{record.attempt}",
            record.verdict.status.upper(),
            record.verdict.reason,
        )
    console.print(table)
    colour = "green" if result.promoted else "bold red"
    console.print(
        f"[{colour}]{result.outcome.replace('_', ' ').upper()}[/]: ", end="", highlight=False
    )
    console.print(result.reason, markup=False, highlight=False)
    if not result.promoted:
        raise typer.Exit(ROLLED_BACK_EXIT)


def _count(window: dict[str, Any]) -> str:
    value = window.get("requests")
    return f"{window.get('transactions', 0):,} tx" if value is None else f"{value:,}"


def _check_cell(checks: list[dict[str, Any]], name: str) -> str:
    for check in checks:
        if check["name"] == name:
            value = check["value"]
            mark = {"pass": "", "fail": " FAIL", "inconclusive": " ?", "skipped": " -"}
            shown = "n/a" if value is None else value if isinstance(value, str) else f"{value:.3g}"
            return shown + mark.get(check["status"], "")
    return ""


@app.command("status", help=STATUS_HELP)
@friendly_errors
def status(
    model_name: ModelOpt = DEFAULT_MODEL_NAME,
    gateway: GatewayOpt = None,
    cluster: ClusterOpt = False,
    isvc: IsvcOpt = "fraud-detector",
    namespace: NamespaceOpt = "fraudops",
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    store: StoreOpt = None,
) -> None:
    """Who serves what now, and the latest rollout's steps (see ``STATUS_HELP``)."""
    from components.store import open_store
    from monitoring.rollout import status as rollout_status

    s = open_store(store_uri(store))
    target = _target(gateway, cluster, isvc, namespace, kubeconfig, context, s, model_name)
    info = rollout_status(target, store=s, model=model_name)
    state = info.state
    if as_json:
        doc = {
            "state": state.as_dict(),
            "rollout_id": info.rollout_id,
            "outcome": info.outcome,
            "events": info.events,
        }
        console.print_json(json.dumps(doc, default=str))
        return
    table = Table(title=f"{model_name} on {state.target}")
    for column in ("role", "version", "traffic", "where"):
        table.add_column(column, overflow="fold")
    table.add_row(
        "stable", state.stable.version, f"{state.stable.percent}%", state.stable.url or ""
    )
    if state.canary:
        table.add_row(
            "canary", state.canary.version, f"{state.canary.percent}%", state.canary.url or ""
        )
    console.print(table)
    details = {k: v for k, v in state.details.items() if v not in (None, "", [])}
    if details.get("mode") != "local gateway":
        console.print(json.dumps(details, default=str), markup=False, highlight=False)
    if info.rollout_id is None:
        console.print(f"no rollout of {model_name} in the audit log yet")
        return
    start = next(e for e in info.events if e["event"] == "rollout.start")
    console.print(
        f"latest rollout {info.rollout_id}: {start['inputs']['canary']} over "
        f"{start['inputs']['stable']}, started {start['time'][:19]} by {start['actor']}: "
        f"{info.outcome.upper()}",
        markup=False,
        highlight=False,
    )
    steps = Table(title="analysed windows (FAIL: failed, ?: too little data, -: not available)")
    columns = ("step", "window end", "verdict", "requests c/s", "err rate", "p99 ms", "PSI")
    for column in (*columns, "alert ratio"):
        steps.add_column(column)
    reasons = []
    for event in info.steps:
        checks, inputs = event["outcome"]["checks"], event["inputs"]
        step = f"{inputs['percent']}% #{inputs['attempt']}"
        canary, stable = event["outcome"]["canary"], event["outcome"]["stable"]
        steps.add_row(
            step,
            inputs["window"]["end"][11:19],
            event["outcome"]["status"].upper(),
            f"{_count(canary)}/{_count(stable)}",
            _check_cell(checks, "error_rate"),
            _check_cell(checks, "latency_p99"),
            _check_cell(checks, "score_psi"),
            _check_cell(checks, "alert_rate_ratio"),
        )
        reasons.append(f"{step}: {event['outcome']['reason']}")
    console.print(steps)
    for line in reasons:
        console.print(line, markup=False, highlight=False)
    for event in info.events:
        if event["event"] in ("rollout.promote", "rollout.rollback"):
            manual = event["inputs"].get("manual")
            reason = event["outcome"].get("reason") or ""
            repeated = not manual and reason.startswith(f"step {event['inputs'].get('percent')}%: ")
            console.print(
                f"{'promoted' if event['event'] == 'rollout.promote' else 'rolled back'} "
                f"{'by hand' if manual else 'automatically'} at "
                f"{event['time'][:19]}" + ("" if repeated else f": {reason}"),
                markup=False,
                highlight=False,
            )


def _manual(action: str) -> Callable[..., None]:
    @friendly_errors
    def command(
        model_name: ModelOpt = DEFAULT_MODEL_NAME,
        gateway: GatewayOpt = None,
        cluster: ClusterOpt = False,
        isvc: IsvcOpt = "fraud-detector",
        namespace: NamespaceOpt = "fraudops",
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")] = "manual",
        store: StoreOpt = None,
    ) -> None:
        from components.store import open_store
        from monitoring import rollout

        s = open_store(store_uri(store))
        target = _target(gateway, cluster, isvc, namespace, kubeconfig, context, s, model_name)
        before = target.state()
        func = rollout.promote if action == "promote" else rollout.rollback
        state = func(target, store=s, model=model_name, reason=reason)
        canary = before.canary.version if before.canary else "?"
        if action == "promote":
            console.print(f"promoted {canary}: {state.stable.version} now serves all traffic")
        else:
            console.print(f"rolled back {canary}: {state.stable.version} serves all traffic")

    command.__doc__ = {
        "promote": "Promote the current canary by hand: all traffic to it, alias champion "
        "moved to it, recorded in the audit log.",
        "rollback": "Roll the current canary back by hand: all traffic to the stable version, "
        "recorded in the audit log.",
    }[action]
    return command


app.command("promote")(_manual("promote"))
app.command("rollback")(_manual("rollback"))
