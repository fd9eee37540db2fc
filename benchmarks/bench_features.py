"""Features: point-in-time features for 1.75M transactions."""

from benchmarks.harness import Figure, timed
from components.features import FeatureSpec, compute_features
from components.generator import GeneratorConfig, generate_transactions

N = 1_750_000


def run() -> list[Figure]:
    frame = generate_transactions(GeneratorConfig.for_transactions(N, n_days=90))
    spec = FeatureSpec()
    seconds, features = timed(lambda: compute_features(frame, spec), repeats=3)
    return [
        Figure(
            "features for 1.75M transactions",
            seconds,
            "s",
            "<= 30 s",
            seconds <= 30,
            f"{len(frame):,} rows x {features.shape[1]} features, best of 3",
        )
    ]
