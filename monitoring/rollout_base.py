"""What every rollout target shares: its state, the protocol it implements, and the errors.

A target is where the traffic split lives: the local gateway (:mod:`monitoring.rollout_local`)
or a KServe InferenceService (:mod:`monitoring.rollout_cluster`). The controller
(:mod:`monitoring.rollout`) only talks to this protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Backend",
    "CanaryExistsError",
    "NoCanaryError",
    "RolloutError",
    "RolloutTarget",
    "TargetState",
    "TargetUnavailableError",
    "UnsupportedDeploymentError",
]


class RolloutError(RuntimeError):
    """A rollout cannot go on; the message names the problem and what to do."""

    user_error = True  # the CLI prints the message as one `error:` line, exit 2


class TargetUnavailableError(RolloutError):
    """The gateway or the Kubernetes API cannot be reached or refused the request."""


class CanaryExistsError(RolloutError):
    """A canary is already deployed: promote it or roll it back first."""


class NoCanaryError(RolloutError):
    """There is no canary to move traffic to, promote or roll back."""


class UnsupportedDeploymentError(RolloutError):
    """The InferenceService runs in a mode where canaryTrafficPercent does nothing."""


@dataclass
class Backend:
    """One version behind the target.

    Attributes:
        version: Bundle version (``v3``), or the storage URI when it names no version.
        url: Where it is served (a model server URL, a storage URI), if known.
        percent: Share of the traffic it receives.
    """

    version: str
    url: str | None = None
    percent: int = 100


@dataclass
class TargetState:
    """Who serves what, right now.

    Attributes:
        target: Human description (``gateway http://...``, ``isvc fraudops/fraud-detector``).
        model: Model name, when the target knows it.
        stable: The stable version.
        canary: The canary, or None.
        updated_at: When the split last changed, if known.
        details: Anything else worth showing (deployment mode, Knative traffic, ...).
    """

    target: str
    model: str | None
    stable: Backend
    canary: Backend | None = None
    updated_at: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def canary_percent(self) -> int:
        """The canary's share (0 without a canary)."""
        return self.canary.percent if self.canary else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "target": self.target,
            "model": self.model,
            "stable": vars(self.stable),
            "canary": vars(self.canary) if self.canary else None,
            "updated_at": self.updated_at,
            "details": self.details,
        }


class RolloutTarget(Protocol):
    """Where the canary is deployed and the traffic is split."""

    description: str

    def state(self) -> TargetState:
        """Who serves what now."""
        ...

    def start(self, version: str, percent: int) -> TargetState:
        """Deploy ``version`` as the canary with ``percent`` of the traffic.

        Raises:
            CanaryExistsError: a canary is already deployed.
        """
        ...

    def wait_ready(
        self, timeout: float, sleep: Callable[[float], None], clock: Callable[[], float]
    ) -> bool:
        """Wait until the canary serves (False on timeout)."""
        ...

    def set_traffic(self, percent: int) -> TargetState:
        """Give the canary ``percent`` of the traffic.

        Raises:
            NoCanaryError: no canary is deployed.
        """
        ...

    def promote(self) -> TargetState:
        """Make the canary the stable version with all the traffic."""
        ...

    def rollback(self) -> TargetState:
        """Send all traffic back to the stable version and retire the canary."""
        ...
