"""The folders show the architecture (docs/ARCHITECTURE.md, "Layout"): imports only go down.

The building blocks that only methods use sit next to the methods and import neither the run
infrastructure nor the driver; the run infrastructure imports no method and no registry, so it
knows no method or dataset by name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILDING_BLOCKS = ["criterions", "hooks", "pool", "curriculum", "label_embeddings"]
DRIVERS = ("registry", "datafree_kd", "train_scratch")


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


@pytest.mark.parametrize("block", BUILDING_BLOCKS)
def test_a_building_block_imports_neither_the_run_nor_the_driver(block):
    modules = imported_modules(REPO / "datafree" / "synthesis" / f"{block}.py")
    climbing = sorted(m for m in modules if m.startswith("datafree.run") or m.startswith("datafree.synthesis.")
                      and m.split(".")[2] not in BUILDING_BLOCKS or m.split(".")[0] in DRIVERS)
    assert climbing == [], f"datafree/synthesis/{block}.py imports {climbing}"


@pytest.mark.parametrize("path", sorted((REPO / "datafree" / "run").glob("*.py")), ids=lambda p: p.name)
def test_the_run_infrastructure_imports_no_method_and_no_registry(path):
    modules = imported_modules(path)
    assert not [m for m in modules if m.startswith("datafree.synthesis") or m.split(".")[0] in DRIVERS]


def test_the_old_top_level_modules_are_gone():
    for name in ("run.py", "run_directory.py", "checkpoints.py", "cli.py", "numerics.py", *(f"{b}.py" for b in
                                                                                           BUILDING_BLOCKS)):
        assert not (REPO / "datafree" / name).exists(), name
