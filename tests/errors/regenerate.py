"""Regenerate tests/errors/*.txt: the exact text `polynimbus validate` prints for each case.

Run `make golden` (or this script), then review the diff: the texts are user-facing.
"""

from __future__ import annotations

from pathlib import Path

from polynimbus.errors import IntentError
from polynimbus.intent import load_intent
from polynimbus.plan import build_plan

HERE = Path(__file__).resolve().parent


def render(case: Path) -> str:
    """The validation output for ``case``, with the file named relative to tests/errors."""
    try:  # what `polynimbus validate` checks: the intent, then what only the plan shows
        build_plan(
            load_intent(case.relative_to(Path.cwd()) if case.is_relative_to(Path.cwd()) else case)
        )
    except IntentError as exc:
        exc.source = case.name
        return exc.render() + "\n"
    raise SystemExit(f"{case} is valid: an error case must be invalid")


def main() -> None:
    for case in sorted(HERE.glob("*.yaml")):
        case.with_suffix(".txt").write_text(render(case))
        print(f"wrote {case.with_suffix('.txt').name}")


if __name__ == "__main__":
    main()
