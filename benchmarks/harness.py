"""Run benchmark modules, keep their figures in results.json, render RESULTS.md."""

from __future__ import annotations

import importlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"


@dataclass
class Figure:
    """One measured number and its target.

    Attributes:
        name: What was measured.
        value: The measurement.
        unit: Unit of ``value``.
        target: The target, as text (``<= 20 s``), or ``""`` when there is none.
        met: Whether the target is met (``None`` without a target).
        note: Anything needed to read the number (sizes, repeats).
    """

    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


def timed(func, repeats: int = 3) -> tuple[float, object]:
    """Best wall-clock seconds of ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - started)
    return best, result


def hardware() -> dict[str, str]:
    """Describe the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def run(names: list[str]) -> dict:
    """Run the named benchmark modules (``bench_<name>.py``) and update the results."""
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"== {name}: {module.__doc__.strip().splitlines()[0]}", flush=True)
        figures = module.run()
        for f in figures:
            status = "" if f.met is None else (" (met)" if f.met else " (MISSED)")
            print(f"   {f.name}: {f.value:,.3f} {f.unit} target {f.target or '-'}{status}")
        results[name] = {
            "title": module.__doc__.strip().splitlines()[0],
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "hardware": hardware(),
            "figures": [asdict(f) for f in figures],
        }
        # after each benchmark: a later one failing keeps the figures measured so far
        RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n")
        RESULTS_MD.write_text(render(results))
    return results


def render(results: dict) -> str:
    """Markdown of every recorded benchmark."""
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m benchmarks`); do not edit by hand.",
        "Each section says when and on what machine it was measured.",
        "",
    ]
    for name, entry in sorted(results.items()):
        hw = entry["hardware"]
        lines += [
            f"## {name}: {entry['title']}",
            "",
            f"Measured {entry['measured_at']} on {hw['cpu']}, {hw['cores']} cores, {hw['memory']}, "
            f"Python {hw['python']}, {hw['os']}.",
            "",
            "| figure | value | target | met | note |",
            "|---|---:|---|---|---|",
        ]
        for f in entry["figures"]:
            met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
            value = f"{f['value']:,.3f} {f['unit']}"
            lines.append(f"| {f['name']} | {value} | {f['target']} | {met} | {f['note']} |")
        lines.append("")
    return "\n".join(lines)


def available() -> list[str]:
    """Names of the benchmark modules in this folder."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
