"""``python -m serving``: the fraud model server (KServe ``ModelServer``, REST V1 and V2).

Examples::

    python -m serving --model_uri .fraudops/store#fraud-detector:champion --http_port 8080
    python -m serving --model_uri /mnt/models --model_name fraud-detector   # in a cluster

Every KServe model-server option works (``--http_port``, ``--workers``, ``--enable_grpc``,
...: ``python -m serving --help``); the fraudops ones are listed under "fraudops".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import kserve
from kserve import ModelServer
from kserve import logging as kserve_logging
from kserve.errors import ModelMissingError
from kserve.utils.utils import strtobool

from components.lifetime import die_with_parent
from serving.load_retry import LoadRetry, check_interval
from serving.log_follow import check_follow_interval

__all__ = ["LocalModelServer", "build_parser", "check_redis_url", "main"]

log = logging.getLogger("fraudops.serving")


class LocalModelServer(ModelServer):
    """KServe's ``ModelServer`` with a configurable bind address (KServe binds 0.0.0.0).

    With latency logging off, it also leaves out the ``TimingMiddleware`` that KServe adds to
    every app only to feed that log (it resolves the route name of every request again).

    Server readiness is the models' (the Open Inference Protocol's definition): KServe's
    ``DataPlane.ready()`` answers True whatever their state, so gRPC ``ServerReady`` said
    ready while the bundle was still loading or failing to load. (REST ``/v2/health/ready``
    is answered by :mod:`serving.http`'s middleware, with the reason.)
    """

    def __init__(self, host: str = "0.0.0.0", **kwargs) -> None:
        super().__init__(**kwargs)
        self.host = host
        if not self.enable_latency_logging:
            _skip_timing_middleware()
        server_ready = self.dataplane.ready

        async def ready() -> bool:
            models = self.registered_models.get_models().values()
            return await server_ready() and all(model.ready for model in models)

        self.dataplane.ready = ready

    async def _serve(self) -> None:
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
        for model in self.registered_models.get_models().values():
            if hasattr(model, "event_loop"):  # where it scores (see FraudDetector.event_loop)
                model.event_loop = asyncio.get_running_loop()
        await super()._serve()


def _skip_timing_middleware() -> None:
    """Make KServe's REST server drop timing_asgi's middleware after adding its own."""
    from kserve.protocol.rest import server
    from timing_asgi import TimingMiddleware

    add = server.RESTServer._add_middlewares
    if getattr(add, "fraudops_skips_timing", False):
        return

    def add_without_timing(self, app) -> None:
        add(self, app)
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]

    add_without_timing.fraudops_skips_timing = True
    server.RESTServer._add_middlewares = add_without_timing


def check_redis_url(url: str) -> str | None:
    """What is wrong with ``--state_redis_url`` (``None``: fine, or not set)."""
    if not url:
        return None
    from redis.connection import parse_url

    from serving.redis_state import without_password

    try:
        parse_url(url)
    except ValueError as e:
        return (
            f"--state_redis_url {without_password(url)!r}: {e} (expected "
            "redis://[user:password@]host:6379/0, or rediss:// for TLS)"
        )
    return None


def build_parser() -> argparse.ArgumentParser:
    """KServe's model-server arguments plus the fraudops ones."""
    from components.model import CONTRIBUTION_METHODS, DEFAULT_CONTRIBUTIONS
    from serving.scorer import REASONS_FOR

    parser = argparse.ArgumentParser(
        prog="python -m serving",
        parents=[kserve.model_server.parser],
        description="Serve a fraudops model bundle with KServe (REST V1 and V2).",
    )
    group = parser.add_argument_group("fraudops")
    group.add_argument(
        "--model_uri",
        required=True,
        help="A bundle folder (e.g. /mnt/models from KServe's storage initializer), or a model "
        "in a store: <store uri>#<name>[:<version|alias>] (default alias champion), e.g. "
        "s3://fraudops#fraud-detector:champion or .fraudops/store#fraud-detector:v3.",
    )
    group.add_argument("--host", default="0.0.0.0", help="Address the HTTP server binds to.")
    group.add_argument(
        "--load_retry_seconds",
        type=float,
        default=30.0,
        help="Start the HTTP server at once and load the bundle in the background: until it "
        "is loaded, /v2/health/ready and the model's routes answer 503 with the reason "
        "(/v2/health/live 200); a load that fails (store down, version not uploaded, a file "
        "failing its sha256) is tried again every this many seconds (0.1 to 86400). 0: load "
        "first and exit with status 1 when it fails, as KServe's own servers do.",
    )
    group.add_argument(
        "--log_store",
        default=None,
        help="Store URI for the inference log; 'none' disables it. Default: the model's store "
        "(store form of --model_uri), none for a bundle folder (in a cluster the KServe logger "
        "and `python -m serving.log_sink` write the log).",
    )
    group.add_argument("--max_batch", type=int, default=10_000, help="Most transactions/request.")
    group.add_argument(
        "--max_body_bytes", type=int, default=64 * 1024 * 1024, help="Largest request body."
    )
    group.add_argument(
        "--max_clock_skew_seconds",
        type=float,
        default=300.0,
        help="How far in the future a transaction's timestamp may be.",
    )
    group.add_argument("--reasons", type=int, default=3, help="Reason codes per transaction.")
    group.add_argument(
        "--reasons_for",
        choices=REASONS_FOR,
        default="all",
        help="Which transactions get reason codes: all, only alerts (faster batches), none.",
    )
    group.add_argument(
        "--contributions",
        choices=CONTRIBUTION_METHODS,
        default=DEFAULT_CONTRIBUTIONS,
        help="XGBoost contributions behind the reason codes: approx (Saabas, about 13 µs a "
        "transaction) or exact (tree SHAP, about 1 ms a transaction).",
    )
    group.add_argument(
        "--log_features",
        type=strtobool,
        default=False,
        help="Also log the engineered features of every transaction.",
    )
    group.add_argument(
        "--replay_log",
        type=strtobool,
        default=True,
        help="At start, add the transactions logged since the bundle's snapshot to the state.",
    )
    group.add_argument(
        "--follow_log_seconds",
        type=float,
        default=5.0,
        help="While serving, read the transactions the other versions of this model log (a "
        "canary and its stable) into the online state every this many seconds (0.1 to 3600), "
        "so the windows of each count all traffic, not only its share; 0: never.",
    )
    group.add_argument(
        "--state_log",
        default=None,
        help="Store URI of the inference log the online state reads (--replay_log, "
        "--follow_log_seconds). Default: --log_store. In a cluster, where the log sink writes "
        "the log and --log_store is none, set it to the sink's --store.",
    )
    group.add_argument(
        "--state_redis_url",
        default=os.environ.get("FRAUDOPS_STATE_REDIS_URL", ""),
        help="Keep the online state in Redis, shared by every replica of the model version "
        "(redis://[user:password@]host:6379/0, rediss:// for TLS; the first replica seeds it "
        "from the bundle's snapshot, the others wait). Default: $FRAUDOPS_STATE_REDIS_URL "
        "(from a Secret); empty: in this process, one replica per version.",
    )
    group.add_argument("--log_flush_interval", type=float, default=5.0, help="Seconds.")
    group.add_argument("--log_flush_records", type=int, default=20_000)
    group.add_argument("--log_max_records", type=int, default=200_000)
    group.add_argument(
        "--log_process",
        type=strtobool,
        default=True,
        help="Build and write log records in a helper process (keeps the GIL for requests).",
    )
    group.add_argument(
        "--log_block_seconds",
        type=float,
        default=0.05,
        help="How long a request may wait for room in a full log buffer before its records "
        "are dropped (and counted in fraudops_inference_log_dropped_total).",
    )
    group.add_argument(  # not --access_log: KServe's own parser would read it as an
        # abbreviation of its --access_log_format (it parses sys.argv when imported)
        "--access_logging",
        type=strtobool,
        default=True,
        help="Uvicorn's per-request access log.",
    )
    group.add_argument(
        "--direct_routes",
        type=strtobool,
        default=True,
        help="Answer plain-JSON V1/V2 scoring requests in fraudops' middleware with KServe's "
        "own request and response types, skipping FastAPI's routing and re-encoding (a V2 "
        "request takes about a third less server time; see docs/serving.md). false: KServe's "
        "routes answer every request.",
    )
    group.add_argument(
        "--bundle_dir", default=None, help="Where a bundle from a store is downloaded."
    )
    parser.set_defaults(model_name=None, enable_grpc=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Load the bundle and serve until SIGTERM/SIGINT; the inference log is flushed at exit."""
    args = build_parser().parse_args(argv)
    die_with_parent()  # a server launched by the gateway or the demo goes when they go
    # A request's rows are few: OpenMP worker threads (xgboost) only contend with the server's
    # own thread; on a busy 2-core machine a DMatrix built with all threads took 6 ms, not 0.1.
    # Set before xgboost is imported (by load()); an explicit OMP_NUM_THREADS wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    logging.getLogger("fraudops").setLevel(logging.INFO)
    if not logging.getLogger("fraudops").handlers:
        logging.getLogger("fraudops").addHandler(logging.StreamHandler())
    if not args.access_logging:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    if not args.enable_latency_logging:  # KServe's timing middleware logs two lines a request
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    if args.workers != 1:
        log.error(
            "--workers %d: run one worker per replica (the online state in memory lives in "
            "one process; replicas of a version share it with --state_redis_url)",
            args.workers,
        )
        return 2
    problem = (
        check_interval(args.load_retry_seconds)
        or check_follow_interval(args.follow_log_seconds)
        or check_redis_url(args.state_redis_url)
    )
    if problem:
        log.error("%s", problem)
        return 2

    from components.store import StoreError, open_store
    from serving.http import install
    from serving.metrics import ServingMetrics
    from serving.model import FraudDetector, ServingConfig
    from serving.source import parse_model_uri

    try:
        source = parse_model_uri(args.model_uri)
        if args.log_store and args.log_store.lower() == "none":
            log_store = None
        elif args.log_store:
            log_store = open_store(args.log_store)
        else:
            log_store = source.store()
        state_log_store = open_store(args.state_log) if args.state_log else None
    except (ValueError, StoreError) as e:
        log.error("%s", e)
        return 2
    name = args.model_name or source.model_name()
    config = ServingConfig(
        max_batch=args.max_batch,
        max_clock_skew_seconds=args.max_clock_skew_seconds,
        n_reasons=args.reasons,
        reasons_for=args.reasons_for,
        contributions=args.contributions,
        log_features=bool(args.log_features),
        replay_log=bool(args.replay_log),
        follow_log_seconds=args.follow_log_seconds,
        log_flush_interval=args.log_flush_interval,
        log_flush_records=args.log_flush_records,
        log_max_records=args.log_max_records,
        log_block_seconds=args.log_block_seconds,
        log_process=bool(args.log_process),
        state_redis_url=args.state_redis_url,
    )
    metrics = ServingMetrics()
    model = FraudDetector(
        name,
        source,
        config,
        metrics=metrics,
        log_store=log_store,
        workdir=Path(args.bundle_dir) if args.bundle_dir else None,
        state_log_store=state_log_store,
    )
    versions = {name: ""}  # metric labels; shared with the middleware, filled in once loaded
    retry = None

    def loaded() -> None:
        versions[name] = model.version
        # Everything loaded so far (libraries, model, online state) lives as long as the
        # process: keep it out of the garbage collector's full passes, which pause requests.
        gc.collect()
        gc.freeze()

    model.on_ready = loaded  # before it reports ready: no pause once requests are scored
    if args.load_retry_seconds:  # load in the background, the server up meanwhile
        model.background_loads = True
        model.retry_seconds = args.load_retry_seconds
        retry = LoadRetry(model, args.load_retry_seconds)
    else:
        try:
            model.load_bundle()
        except ModelMissingError as e:
            log.error("model not ready: %s", e)
            return 1
    server = LocalModelServer(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
    )
    install(
        kserve.model_server.app,
        metrics,
        versions,
        args.max_body_bytes,
        direct={name: model} if args.direct_routes else None,
        served={name: model},
    )
    # registered whether ready or not (KServe's start() refuses a server with no ready model)
    server.register_model(model)
    model.enable_latency_logging = args.enable_latency_logging
    if retry is not None:
        retry.start()
    try:
        server.start([])
    finally:
        if retry is not None:
            retry.stop()
        model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
