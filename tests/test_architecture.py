"""The parts import each other in one direction only (DESIGN.md section 3)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("components", "pipelines", "serving", "monitoring", "fraudops")
# What each part may import, besides itself. fraudops (the CLI) is the only one that sees all.
ALLOWED = {
    "components": set(),
    "pipelines": {"components"},
    "serving": {"components"},
    "monitoring": {"components", "pipelines"},
    "fraudops": {"components", "pipelines", "serving", "monitoring"},
}
# Serving's image stays lean: no training-only code.
TRAINING_ONLY = ("components.training", "components.steps", "components.evaluation", "pipelines")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def files(part: str) -> list[Path]:
    return sorted((ROOT / part).rglob("*.py"))


@pytest.mark.parametrize("part", PARTS)
def test_imports_flow_one_way(part):
    assert files(part), f"no Python files under {part}/"
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files(part)
        for name in imports_of(path)
        if name.split(".")[0] in PARTS
        and name.split(".")[0] != part
        and name.split(".")[0] not in ALLOWED[part]
    }
    assert not wrong, "imports against DESIGN.md section 3:\n" + "\n".join(sorted(wrong))


def test_serving_does_not_import_training_code():
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files("serving")
        for name in imports_of(path)
        if name.startswith(TRAINING_ONLY)
    }
    assert not wrong, "\n".join(sorted(wrong))


def test_the_checker_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from serving.model import FraudDetector\nimport monitoring.drift\n")
    assert imports_of(bad) == {"serving.model", "monitoring.drift"}
