"""``python -m serving.gateway``: the local canary gateway in front of KServe model servers.

In a cluster, KServe and Knative split an InferenceService's traffic between its stable and
canary revisions (``canaryTrafficPercent``). Locally this gateway plays that part: it serves the
InferenceService's URL paths for one model, launches the stable model server (``python -m
serving``) and, through its admin API under ``/rollout``, canaries, whose share of the scoring
requests it sets, promotes or rolls back without dropping a request. See docs/rollout-local.md.

Examples::

    python -m serving.gateway --model_uri .fraudops/store#fraud-detector:champion --port 8080
    python -m serving.gateway --model_uri s3://fraudops#fraud-detector:v3 --port 8080 \\
        --server_arg --reasons_for --server_arg alerts

Parts: :mod:`serving.gateway_routing` (weights, drain), :mod:`serving.gateway_stats`
(per-backend statistics), :mod:`serving.gateway_proxy` (forwarding one request),
:mod:`serving.gateway_process` (model-server processes), :mod:`serving.gateway_config`
(settings), :mod:`serving.gateway_control` (the controller), :mod:`serving.gateway_documents`
(admin documents), :mod:`serving.gateway_metrics` (Prometheus), :mod:`serving.gateway_http`
(FastAPI).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from components.lifetime import die_with_parent
from serving.gateway_config import GatewayConfig, RolloutError
from serving.gateway_control import Forwarded, Gateway
from serving.gateway_http import create_gateway_app

__all__ = [
    "Forwarded",
    "Gateway",
    "GatewayConfig",
    "RolloutError",
    "build_parser",
    "create_gateway_app",
    "main",
]

log = logging.getLogger("fraudops.gateway")

EPILOG = """\
admin API (JSON, on the same port; bind to loopback: in a cluster the Kubernetes API does this):
  GET  /rollout                  {"model", "stable": {"version", "url"},
                                  "canary": null | {"version", "url", "percent"}, "updated_at"}
  POST /rollout/canary           {"version": "v2", "percent": 10}  launch a server for v2
                                 {"version": "v2", "url": "http://...", "percent": 10}  attach
  POST /rollout/traffic          {"percent": 50}
  POST /rollout/promote          the canary becomes stable; the old one is drained, stopped
  POST /rollout/rollback         the canary is drained and stopped
  GET  /rollout/stats?since=T    requests, errors, latency per backend since unix time T
  GET  /rollout/backends         every backend: role, pid, exit code, log file
  GET  /metrics                  Prometheus

Stop with SIGTERM or Ctrl-C: the model servers get SIGTERM and flush their inference logs.
"""


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The gateway's command-line arguments."""
    defaults = GatewayConfig(model_uri="")
    parser = argparse.ArgumentParser(
        prog="python -m serving.gateway",
        description="Local canary gateway: serves a model's KServe URL paths, launches and\n"
        "supervises its stable and canary model servers (python -m serving) and splits the\n"
        "scoring requests between them by weight (docs/rollout-local.md).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model_uri",
        required=True,
        help="The model in a store and its stable version: <store uri>#<name>[:<version|alias>] "
        "(default alias champion), e.g. .fraudops/store#fraud-detector:champion. Canary "
        "versions are launched from the same store.",
    )
    parser.add_argument("--port", type=int, default=defaults.port, help="The gateway's port.")
    parser.add_argument(
        "--host",
        default=defaults.host,
        help="Address to bind (the admin API is on the same port: keep it on loopback).",
    )
    parser.add_argument(
        "--server_arg",
        action="append",
        default=[],
        metavar="ARG",
        help="An argument for every model server launched, repeated in order, e.g. "
        "--server_arg --reasons_for --server_arg alerts (see python -m serving --help).",
    )
    parser.add_argument(
        "--log_dir", default=None, help="Folder for the model servers' logs (default: temporary)."
    )
    parser.add_argument(
        "--ready_timeout",
        type=float,
        default=defaults.ready_timeout,
        help="Seconds a launched model server may take to become ready.",
    )
    parser.add_argument(
        "--drain_timeout",
        type=float,
        default=defaults.drain_timeout,
        help="Seconds to wait for the requests of a backend leaving (promote, rollback, exit).",
    )
    parser.add_argument(
        "--stop_timeout",
        type=float,
        default=defaults.stop_timeout,
        help="Seconds a model server may take to exit after SIGTERM before it is killed.",
    )
    parser.add_argument(
        "--backend_timeout",
        type=float,
        default=defaults.backend_timeout,
        help="Seconds a backend may take to answer one request.",
    )
    parser.add_argument(
        "--max_body_bytes",
        type=int,
        default=defaults.max_body_bytes,
        help="Largest request body (the gateway buffers bodies to retry them).",
    )
    parser.add_argument(
        "--stats_window",
        type=int,
        default=defaults.stats_window,
        help="Most recent requests per backend kept for GET /rollout/stats?since=.",
    )
    parser.add_argument(
        "--access_logging",
        type=_flag,
        default=defaults.access_logging,
        help="Uvicorn's per-request access log (true/false).",
    )
    parser.add_argument("--seed", type=int, default=None, help="Seed of the routing choice.")
    return parser


def _join_server_args(argv: Sequence[str]) -> list[str]:
    """``--server_arg --x`` -> ``--server_arg=--x`` (argparse refuses a value starting with -)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--server_arg" and i + 1 < len(argv):
            out.append(f"--server_arg={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    """The :class:`GatewayConfig` of parsed arguments."""
    return GatewayConfig(
        model_uri=args.model_uri,
        host=args.host,
        port=args.port,
        server_args=tuple(args.server_arg),
        log_dir=Path(args.log_dir) if args.log_dir else None,
        ready_timeout=args.ready_timeout,
        drain_timeout=args.drain_timeout,
        stop_timeout=args.stop_timeout,
        backend_timeout=args.backend_timeout,
        max_body_bytes=args.max_body_bytes,
        stats_window=args.stats_window,
        access_logging=args.access_logging,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; then stop the model servers gracefully.

    Returns:
        0 after a clean stop, 1 when the stable server did not start, 2 for bad arguments.
    """
    import uvicorn

    args = build_parser().parse_args(_join_server_args(sys.argv[1:] if argv is None else argv))
    die_with_parent()  # a gateway launched by the demo goes when the demo goes
    config = config_from_args(args)
    try:
        config.source()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logger = logging.getLogger("fraudops")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: the admin API (/rollout) is reachable from there", config.host)
    server = uvicorn.Server(
        uvicorn.Config(
            create_gateway_app(config),
            host=config.host,
            port=config.port,
            lifespan="on",
            access_log=config.access_logging,
            server_header=False,  # the backends' own server and date headers pass through
            date_header=False,
            timeout_graceful_shutdown=int(config.drain_timeout),
        )
    )
    # uvicorn re-raises the stop signal after its graceful shutdown, with the handlers it found
    # installed: ours ignore it, so a requested stop exits with 0 (as the model servers do)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    except SystemExit:  # uvicorn exits with 3 when the lifespan startup failed
        return 1
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
