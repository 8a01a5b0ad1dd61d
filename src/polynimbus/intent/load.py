"""Load an intent from YAML and validate it, collecting *all* problems at once.

Each problem carries its YAML path (``sites[1].subnet``), its line in the file and a hint.
Structural problems (types, unknown keys, unknown providers) come from the pydantic models;
the semantic ones (names, numbering, hub) from :mod:`polynimbus.intent.validate`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from polynimbus.errors import IntentError, Problem
from polynimbus.intent.models import (
    ChainSpec,
    Intent,
    Overlay,
    ServiceSpec,
    SiteSpec,
    TenantSpec,
)

_M = TypeVar("_M", bound=BaseModel)
PathKey = tuple[str | int, ...]


def format_path(loc: PathKey) -> str:
    """``('sites', 1, 'subnet')`` -> ``sites[1].subnet``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_map(text: str) -> dict[PathKey, int]:
    """Map each YAML path to the 1-based line of its value (keys too, as path + ('<key>',))."""
    lines: dict[PathKey, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: PathKey) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                lines[(*path, key, "<key>")] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    if root is not None:
        walk(root, ())
    return lines


def _line_of(lines: dict[PathKey, int], loc: PathKey, key: bool = False) -> int | None:
    if key and (*loc, "<key>") in lines:
        return lines[(*loc, "<key>")]
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _known_fields(model: type[BaseModel], loc: PathKey) -> list[str]:
    """Field names of the model found at ``loc`` (for 'did you mean')."""
    from polynimbus.intent.models import (
        ChainSpec,
        HostSpec,
        Location,
        MatchSpec,
        NetworkSpec,
        ServiceSpec,
        SRv6Spec,
        TenantSpec,
        UnderlaySpec,
    )

    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        nested: dict[str, type[BaseModel]] = {
            "overlay": Overlay,
            "sites": SiteSpec,
            "hosts": HostSpec,
            "location": Location,
            "underlay": UnderlaySpec,
            "srv6": SRv6Spec,
            "services": ServiceSpec,
            "chains": ChainSpec,
            "match": MatchSpec,
            "tenants": TenantSpec,
            "networks": NetworkSpec,
        }
        current = nested.get(part)
    if current is None:
        return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _problems_from_pydantic(
    err: ValidationError, model: type[BaseModel], offset: PathKey, lines: dict[PathKey, int]
) -> list[Problem]:
    out: list[Problem] = []
    for e in err.errors(include_url=False):
        loc: PathKey = tuple(p for p in e["loc"] if p != "function-after")
        # Pydantic adds the union/str branch name for "str | dict" inputs; drop such noise.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        full = (*offset, *loc)
        kind = e["type"]
        inp = e.get("input")
        hint: str | None = None
        if kind == "extra_forbidden":
            key = str(loc[-1])
            known = _known_fields(model, loc[:-1])
            msg = f"unknown key {key!r}"
            hint = (_suggest(key, known) + "known keys: " + ", ".join(known)).strip()
            out.append(Problem(format_path(full), msg, hint, _line_of(lines, full, key=True)))
            continue
        if kind == "missing":
            key = str(loc[-1])
            msg = f"required key {key!r} is missing"
            parent = full[:-1]
            out.append(
                Problem(
                    format_path(parent) if parent else "",
                    msg,
                    f"add {key}: to {format_path(parent) or 'the top level'}",
                    _line_of(lines, parent),
                )
            )
            continue
        if kind == "literal_error":
            field = str(loc[-1])
            choices = [
                c.strip().strip("'")
                for c in str(e.get("ctx", {}).get("expected", "")).replace(" or ", ", ").split(",")
            ]
            choices = [c for c in choices if c]
            msg = f"unknown {field} {inp!r}"
            hint = (_suggest(str(inp), choices) + "one of: " + ", ".join(choices)).strip()
        elif kind in ("ip_v4_network", "ip_v4_interface"):
            msg = f"{inp!r} is not an IPv4 network"
            hint = "write it as A.B.C.D/LEN with the host bits zero, e.g. 10.1.0.0/24"
        elif kind == "ip_v4_address":
            msg = f"{inp!r} is not an IPv4 address"
            hint = "write it as A.B.C.D, e.g. 10.1.0.7"
        elif kind == "value_error":
            msg = str(e.get("ctx", {}).get("error", e["msg"]))
        elif kind == "too_short" and loc and loc[-1] == "sites":
            msg = "there are no sites"
            hint = "list at least one site under sites:"
        elif kind == "too_short":
            msg = "expected at least one item, got an empty list"
            hint = f"list at least one under {loc[-1]}:" if loc else None
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            msg = f"expected a mapping, got {type(inp).__name__}"
        elif kind == "list_type":
            msg = f"expected a list, got {inp!r}"
            if isinstance(inp, str | int | float):
                hint = f"write it in brackets: [{inp}]"
        else:
            msg = e["msg"]
            if inp is not None and not isinstance(inp, dict | list):
                msg += f" (got {inp!r})"
        out.append(Problem(format_path(full), msg, hint, _line_of(lines, full)))
    return out


def load_intent_text(text: str, source: str | None = None) -> Intent:
    """Parse and validate an intent given as YAML text.

    Args:
        text: the YAML document.
        source: file name shown in error messages.

    Returns:
        the validated :class:`Intent`.

    Raises:
        IntentError: with every problem found (YAML syntax, structure, numbering, names).
    """
    from polynimbus.intent.validate import semantic_problems

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise IntentError(
            [Problem("", f"not valid YAML: {problem}", "check indentation and quoting", line)],
            source,
        ) from None
    if not isinstance(data, dict):
        raise IntentError(
            [
                Problem(
                    "",
                    "an intent must be a YAML mapping with name:, overlay: and sites:",
                    "see examples/prestocloud.yaml",
                    1,
                )
            ],
            source,
        )
    lines = _line_map(text)
    try:
        intent = Intent.model_validate(data)
    except ValidationError as err:
        problems = _problems_from_pydantic(err, Intent, (), lines)
        problems += _partial_semantics(data, lines)
        raise IntentError(_dedupe(problems), source) from None
    problems = semantic_problems(intent, site_indices=None)
    if problems:
        for i, p in enumerate(problems):
            if p.line is None:
                problems[i] = Problem(
                    p.path, p.message, p.hint, _line_of(lines, _parse_path(p.path))
                )
        problems.sort(key=lambda p: p.line or 0)  # file order (stable within a line)
        raise IntentError(problems, source)
    return intent


def _partial_semantics(data: dict[str, Any], lines: dict[PathKey, int]) -> list[Problem]:
    """Semantic checks over the parts that parsed, so one typo does not hide other errors."""
    from polynimbus.intent.validate import semantic_problems

    raw_overlay = data.get("overlay") or {}
    if not isinstance(raw_overlay, dict):
        raw_overlay = {}
    kept: dict[str, Any] = {}
    for key, value in raw_overlay.items():  # keep the keys that are valid on their own
        try:
            Overlay.model_validate({**kept, key: value})
            kept[key] = value
        except ValidationError:
            continue
    if "topology" not in kept:  # the hub check means nothing without a valid topology
        kept.pop("hub", None)
    overlay = Overlay.model_validate(kept)
    raw_sites = data.get("sites")
    if not isinstance(raw_sites, list):
        return []
    good: list[SiteSpec] = []
    indices: list[int] = []
    for i, raw in enumerate(raw_sites):
        try:
            good.append(SiteSpec.model_validate(raw))
            indices.append(i)
        except ValidationError:
            continue
    out: list[Problem] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(raw_sites):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        if name in first_seen:
            out.append(
                Problem(
                    f"sites[{i}].name",
                    f"duplicate site name {name!r} (also sites[{first_seen[name]}])",
                    "site names must be unique; rename one",
                    _line_of(lines, ("sites", i, "name")),
                )
            )
        else:
            first_seen[name] = i
    if not good:
        return out
    services, chains, tenants = [], [], []
    if len(good) == len(raw_sites):  # these name sites: check them only then
        services = _valid_items(data.get("services"), ServiceSpec)
        chains = _valid_items(data.get("chains"), ChainSpec)
        tenants = _valid_items(data.get("tenants"), TenantSpec)
    intent = Intent.model_construct(
        name=str(data.get("name", "x")),
        overlay=overlay,
        sites=good,
        services=[s for _, s in services],
        chains=[c for _, c in chains],
        tenants=[t for _, t in tenants],
    )
    extra = {
        "services": [i for i, _ in services],
        "chains": [i for i, _ in chains],
        "tenants": [i for i, _ in tenants],
    }
    raw_services = data.get("services")
    declared = {
        s["name"]
        for s in (raw_services if isinstance(raw_services, list) else [])
        if isinstance(s, dict) and isinstance(s.get("name"), str)
    }
    for p in semantic_problems(intent, site_indices=indices, item_indices=extra):
        if p.message.startswith("duplicate site name"):
            continue  # checked above over every site, valid or not
        if any(p.message == f"no service named {n!r}" for n in declared):
            continue  # declared, but with a structural problem reported above
        out.append(Problem(p.path, p.message, p.hint, _line_of(lines, _parse_path(p.path))))
    return out


def _valid_items(raw: Any, model: type[_M]) -> list[tuple[int, _M]]:
    """The items of list ``raw`` that are valid ``model`` instances, with their indices."""
    if not isinstance(raw, list):
        return []
    out: list[tuple[int, _M]] = []
    for i, item in enumerate(raw):
        try:
            out.append((i, model.model_validate(item)))
        except ValidationError:
            continue
    return out


def _parse_path(path: str) -> PathKey:
    out: list[str | int] = []
    for part in path.replace("]", "").split("."):
        if not part:
            continue
        head, *idx = part.split("[")
        if head:
            out.append(head)
        out.extend(int(i) for i in idx)
    return tuple(out)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return sorted(out, key=lambda p: p.line or 0)


def load_intent(path: str | Path) -> Intent:
    """Read and validate an intent file.

    Raises:
        IntentError: the file is missing, unreadable or invalid (all problems at once).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise IntentError(
            [
                Problem(
                    "",
                    f"cannot read the intent: {exc.strerror}",
                    "give the path of an intent YAML file",
                )
            ],
            str(p),
        ) from None
    return load_intent_text(text, str(p))
