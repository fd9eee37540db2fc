"""KServe model server for real-time fraud scoring (``python -m serving``; docs/serving.md).

Parts: :mod:`serving.transactions` (decode and validate V1/V2 requests),
:mod:`serving.state` (online feature state), :mod:`serving.features` (features at request time
with the training kernel), :mod:`serving.scorer` (model, decision, reason codes),
:mod:`serving.model` (the KServe ``Model``), :mod:`serving.log_writer` (inference log),
:mod:`serving.log_sink` (KServe logger CloudEvents -> inference log), :mod:`serving.http`
(errors, limits, metrics), :mod:`serving.metrics`, and the local canary gateway
(``python -m serving.gateway``; docs/rollout-local.md) in :mod:`serving.gateway`.

The names below are imported on first use, so that ``python -m serving.gateway`` and the log
sink do not pay for KServe and pandas at start-up.
"""

from importlib import import_module

__all__ = [
    "BundleSource",
    "FraudDetector",
    "InMemoryOnlineState",
    "OnlineState",
    "Scorer",
    "ServingConfig",
    "parse_model_uri",
]
_WHERE = {
    "FraudDetector": "serving.model",
    "ServingConfig": "serving.model",
    "Scorer": "serving.scorer",
    "BundleSource": "serving.source",
    "parse_model_uri": "serving.source",
    "InMemoryOnlineState": "serving.state",
    "OnlineState": "serving.state",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
