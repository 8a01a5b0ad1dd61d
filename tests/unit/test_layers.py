"""The stages import only from earlier stages (intent -> plan -> render -> apply -> verify);
backends (transports) and shared modules sit beside them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "polynimbus"

STAGES = ["intent", "plan", "render", "apply", "verify"]
"""In order. ``apply`` is apply.py with the targets and orchestrate.py."""

PACKAGE_STAGE = {
    "intent": "intent",
    "numbering": "intent",  # the numbering plan's checks are part of validating an intent
    "plan": "plan",
    "render": "render",
    "apply": "apply",
    "targets": "apply",
    "orchestrate": "apply",
    "verify": "verify",
}
"""Module (first component under polynimbus) -> its stage; others are shared or the CLI."""


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "polynimbus" or len(parts) < 2:
        return None
    return PACKAGE_STAGE.get(parts[1])


def runtime_imports(path: Path) -> list[str]:
    """Modules imported by ``path`` outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                skip.add(id(sub))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


MODULES = sorted(p for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_no_stage_imports_from_a_later_one(path: Path) -> None:
    rel = path.relative_to(SRC).with_suffix("")
    mine = stage_of("polynimbus." + ".".join(rel.parts))
    later = set(STAGES[STAGES.index(mine) + 1 :]) if mine else set(STAGES)
    shared_pure = ("tunnels", "node", "resources", "keys", "names")
    if mine is None and rel.parts[0] not in shared_pure:
        later = set()  # capabilities, errors, registry, procs, state: checked by their own use
    bad = [m for m in runtime_imports(path) if stage_of(m) in later]
    assert bad == [], f"{rel} ({mine or 'shared'}) imports later stages: {bad}"


def test_the_check_catches_a_backward_import(tmp_path: Path) -> None:
    """Positive control: a plan module importing a target is caught."""
    f = tmp_path / "x.py"
    f.write_text("from polynimbus.targets.lab import LabTarget\n")
    assert stage_of(runtime_imports(f)[0]) == "apply"
    assert STAGES.index("apply") > STAGES.index("plan")
