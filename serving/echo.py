"""``python -m serving.echo``: an empty KServe model, the floor of the serving benchmark.

Its ``predict`` returns the request as it came: what is left of a request's latency is KServe's
own cost (HTTP, routing, decoding, encoding) on this machine. ``benchmarks/bench_serving.py``
runs it with the same server settings as the fraud model and reports the ratio.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import kserve
from kserve import Model
from kserve import logging as kserve_logging
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.utils.utils import strtobool

__all__ = ["EchoModel", "main"]


class EchoModel(Model):
    """Returns its input: V1 ``{"predictions": instances}``, V2 the inputs as outputs."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=list(payload.inputs),
            )
        return {"predictions": payload.get("instances", []) if isinstance(payload, dict) else []}


def main(argv: Sequence[str] | None = None) -> int:
    from serving.__main__ import LocalModelServer

    parser = argparse.ArgumentParser(
        prog="python -m serving.echo", parents=[kserve.model_server.parser]
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--access_logging", type=strtobool, default=True)
    parser.set_defaults(model_name="echo", enable_grpc=False)
    args = parser.parse_args(argv)
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    if not args.access_logging:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    if not args.enable_latency_logging:  # as the fraud server does
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server = LocalModelServer(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=args.enable_latency_logging,
        event_loop=args.event_loop,
    )
    server.start([EchoModel(args.model_name)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
