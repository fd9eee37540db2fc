"""`python -m benchmarks [name ...]`: run benchmarks (all by default) and rewrite RESULTS.md."""

import argparse

from benchmarks.harness import available, run

parser = argparse.ArgumentParser(
    prog="python -m benchmarks",
    description="Run fraudops benchmarks and record the figures, with hardware and date, in "
    "benchmarks/RESULTS.md. Targets are checked here, never by timed unit tests.",
)
parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
args = parser.parse_args()
run(args.names or available())
