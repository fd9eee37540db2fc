"""The feature specification: everything needed to compute features the same way everywhere.

It is stored in every model bundle (``feature_spec.json``) so that batch scoring and the model
server compute exactly the features the model was trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from components.schema import ACCOUNT_TYPES, CHANNELS, MERCHANT_CATEGORIES, TRANSACTION_TYPES

__all__ = ["FeatureSpec"]

SPEC_VERSION = 1


@dataclass(frozen=True)
class FeatureSpec:
    """Which features to compute and how.

    Attributes:
        customer_windows_days: Windows of the per-customer count/sum/mean features.
        terminal_windows_days: Windows of the per-terminal count/fraud-rate features.
        label_delay_days: Labels younger than this are treated as unknown: terminal windows end
            this many days before the transaction.
        night_hours: Hours (UTC) that count as night.
        vocabularies: Category values one-hot encoded per categorical field; anything else
            falls into ``<field>=other``.
        extra_numeric: Extra numeric columns kept by a mapping (e.g. V1..V28).
        version: Version of this spec's format.
    """

    customer_windows_days: tuple[int, ...] = (1, 7, 30)
    terminal_windows_days: tuple[int, ...] = (1, 7, 30)
    label_delay_days: float = 7.0
    night_hours: tuple[int, ...] = (22, 23, 0, 1, 2, 3, 4, 5)
    vocabularies: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "transaction_type": TRANSACTION_TYPES,
            "channel": CHANNELS,
            "account_type": ACCOUNT_TYPES,
            "merchant_category": MERCHANT_CATEGORIES,
        }
    )
    extra_numeric: tuple[str, ...] = ()
    version: int = SPEC_VERSION

    @property
    def history_days(self) -> float:
        """How much history the windowed features need before a transaction."""
        return max(
            max(self.customer_windows_days, default=0),
            max(self.terminal_windows_days, default=0) + self.label_delay_days,
        )

    def feature_names(self) -> list[str]:
        """Names of the model's input features, in order."""
        names = [
            "amount",
            "log_amount",
            "hour",
            "day_of_week",
            "is_weekend",
            "is_night",
            "account_balance",
            "account_age_days",
            "amount_to_balance",
        ]
        for name, values in self.vocabularies.items():
            names += [f"{name}={v}" for v in values] + [f"{name}=other"]
        for w in self.customer_windows_days:
            names += [f"customer_count_{w}d", f"customer_sum_{w}d", f"customer_mean_{w}d"]
        names += ["customer_seconds_since_previous", "amount_vs_customer_mean"]
        for w in self.terminal_windows_days:
            names += [f"terminal_count_{w}d", f"terminal_fraud_rate_{w}d"]
        names += list(self.extra_numeric)
        return names

    def to_json(self) -> str:
        """Serialise for the model bundle."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        """Read a spec written by :meth:`to_json`.

        Raises:
            ValueError: the spec was written by a newer, unknown format version.
        """
        data = json.loads(text)
        if data.get("version", SPEC_VERSION) > SPEC_VERSION:
            raise ValueError(
                f"feature spec version {data['version']} is newer than this fraudops understands "
                f"({SPEC_VERSION}); upgrade fraudops"
            )
        return cls(
            customer_windows_days=tuple(data["customer_windows_days"]),
            terminal_windows_days=tuple(data["terminal_windows_days"]),
            label_delay_days=float(data["label_delay_days"]),
            night_hours=tuple(data["night_hours"]),
            vocabularies={k: tuple(v) for k, v in data["vocabularies"].items()},
            extra_numeric=tuple(data.get("extra_numeric", ())),
            version=int(data.get("version", SPEC_VERSION)),
        )
