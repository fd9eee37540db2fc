"""Fraud features: one definition for training, batch scoring and serving."""

from components.features.build import compute_features, stateless_features
from components.features.spec import FeatureSpec

__all__ = ["FeatureSpec", "compute_features", "stateless_features"]
