"""How often and how patiently to retry a failing operation (object store, alert channels)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between attempts.

    Attributes:
        attempts: Total attempts (1 = no retry).
        wait: Wait before the first retry in seconds; doubles on each further retry.
        max_wait: Upper bound of one wait in seconds.
    """

    attempts: int = 5
    wait: float = 0.5
    max_wait: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.wait < 0 or self.max_wait < 0:
            raise ValueError("RetryPolicy.wait and max_wait must be >= 0")
