"""KServe model server for real-time fraud scoring (``python -m serving``; docs/serving.md).

Parts: :mod:`serving.transactions` (decode and validate V1/V2 requests),
:mod:`serving.state` (online feature state), :mod:`serving.features` (features at request time
with the training kernel), :mod:`serving.scorer` (model, decision, reason codes),
:mod:`serving.model` (the KServe ``Model``), :mod:`serving.log_writer` (inference log),
:mod:`serving.log_sink` (KServe logger CloudEvents -> inference log), :mod:`serving.http`
(errors, limits, metrics), :mod:`serving.metrics`.
"""

from serving.model import FraudDetector, ServingConfig
from serving.scorer import Scorer
from serving.source import BundleSource, parse_model_uri
from serving.state import InMemoryOnlineState, OnlineState

__all__ = [
    "BundleSource",
    "FraudDetector",
    "InMemoryOnlineState",
    "OnlineState",
    "Scorer",
    "ServingConfig",
    "parse_model_uri",
]
