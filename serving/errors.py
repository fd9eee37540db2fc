"""Client errors of the model server, each with an HTTP status and a metric kind.

All of them subclass kserve's :class:`~kserve.errors.InvalidInput` (HTTP 400 in KServe), so a
handler that only knows KServe's classes still answers 4xx; :mod:`serving.http` maps the more
specific ones to 413 and 415. The message always names the field, the instance and the problem.
"""

from __future__ import annotations

from kserve.errors import InvalidInput, ModelNotReady

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "InvalidTransactions",
    "PayloadTooLarge",
    "ServingError",
    "StateUnavailableError",
    "UnsupportedMediaType",
]

MAX_LISTED_PROBLEMS = 20
"""How many problems one error message lists before summarising the rest."""


class ServingError(InvalidInput):
    """A request the server refuses; ``status`` is the HTTP status, ``kind`` the metric label."""

    status = 400
    kind = "invalid_input"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class InvalidTransactions(ServingError):
    """One or more transactions (or the request around them) are invalid.

    Attributes:
        problems: Every problem found, e.g. ``instance 3: amount: negative (-5.0)``.
    """

    def __init__(self, problems: list[str], kind: str = "invalid_input") -> None:
        self.problems = problems
        self.kind = kind
        shown = problems[:MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        text = "; ".join(shown) + (f"; ... and {more} more problem(s)" if more else "")
        super().__init__(f"invalid request: {text}")


class PayloadTooLarge(ServingError):
    """Too many transactions in one request, or too many bytes."""

    status = 413
    kind = "payload_too_large"


class UnsupportedMediaType(ServingError):
    """The request's content type is not one the protocol accepts."""

    status = 415
    kind = "unsupported_media_type"


class StateUnavailableError(ModelNotReady):
    """The model cannot score now because its shared online state cannot be used (Redis down,
    or seeding it again): 503 with the reason, not a client error and not a 500.

    A :class:`~kserve.errors.ModelNotReady` so that KServe's own handlers (and gRPC:
    UNAVAILABLE, from ``reason``) treat it as one; :mod:`serving.http` answers it without
    KServe's traceback per request.
    """

    kind = "state_unavailable"

    def __init__(self, model_name: str, detail: str) -> None:
        super().__init__(model_name, detail)
        self.error_msg = f"model {model_name} cannot score now: {detail}"
        self.reason = self.error_msg
