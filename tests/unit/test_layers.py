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
    "move": "apply",  # an operation on the running lab, like orchestrate
    "verify": "verify",
    "snapshot": "verify",  # save/diff/restore read the lab and apply through orchestrate
}
"""Module (first component under polynimbus) -> its stage; others are shared or the CLI."""


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "polynimbus" or len(parts) < 2:
        return None
    return PACKAGE_STAGE.get(parts[1])


def runtime_imports(path: Path, module: str) -> list[str]:
    """Modules imported by ``path`` (module ``module``) outside ``if TYPE_CHECKING:``
    blocks (annotations only), relative imports resolved, ``from P import X`` counted as
    importing ``P.X`` too, ``importlib.import_module("...")`` included."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                skip.add(id(sub))
    package = module.split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            out.append(target)
            out += [f"{target}.{a.name}" for a in node.names]  # X may be a module
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith("import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            out.append(str(node.args[0].value))
    return out


def later_imports(path: Path, module: str) -> list[str]:
    """The imports of ``module`` that break the stage order: a stage importing a later
    stage, or a shared module importing any stage."""
    mine = stage_of(module)
    later = set(STAGES[STAGES.index(mine) + 1 :]) if mine else set(STAGES)
    return [m for m in runtime_imports(path, module) if stage_of(m) in later]


FRONT_ENDS = {"cli", "api"}
"""The command line and the REST API sit above every stage and may import any of them."""

MODULES = sorted(p for p in SRC.rglob("*.py") if not FRONT_ENDS & set(p.relative_to(SRC).parts))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_no_stage_imports_from_a_later_one(path: Path) -> None:
    rel = path.relative_to(SRC).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    module = ".".join(["polynimbus", *parts])
    assert later_imports(path, module) == []


@pytest.mark.parametrize(
    "text",
    [
        "from polynimbus.targets.lab import LabTarget\n",
        "from ..targets import lab\n",
        "from polynimbus import verify\n",
        "from polynimbus import orchestrate as o\n",
        "import importlib\nimportlib.import_module('polynimbus.verify')\n",
    ],
)
def test_the_check_catches_a_backward_import(tmp_path: Path, text: str) -> None:
    """Positive control: a plan module importing a later stage, absolutely, relatively or
    through importlib, is caught by the same function the test above uses."""
    f = tmp_path / "x.py"
    f.write_text(text)
    assert later_imports(f, "polynimbus.plan.x") != []


def test_a_shared_module_importing_a_stage_is_caught(tmp_path: Path) -> None:
    f = tmp_path / "state.py"
    f.write_text("from polynimbus.targets.lab import netns\n")
    assert later_imports(f, "polynimbus.state") != []
