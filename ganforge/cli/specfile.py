"""A job spec from a file or stdin, with `--set path=value` overrides applied.

    load_spec("spec.yaml", ["loss.lr_d=1e-4", "training.steps=500"])

Every error here is a usage error (exit 2) that names the file or the `--set` at fault.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from ganforge.cli.exits import USAGE, fail


def load_spec(source: str, overrides: list[str]) -> dict[str, Any]:
    """The spec in `source` (.yaml/.yml/.json path, or `-` for YAML or JSON on stdin) with `overrides` applied.

    Raises typer.Exit(2) after printing why, when the file cannot be read or parsed, is not a
    mapping, or an override is malformed.
    """
    if source == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        path = Path(source)
        if path.suffix.lower() not in (".yaml", ".yml", ".json"):
            fail(f"{source}: a spec file ends in .yaml, .yml or .json (or is - for stdin)", USAGE)
        try:
            text, name = path.read_text(encoding="utf-8"), source
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read the spec {source}: {getattr(exc, 'strerror', None) or exc}", USAGE)
    try:
        # YAML is a superset of JSON, but json reports JSON mistakes better.
        spec = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        fail(f"{name}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", USAGE)
    except yaml.YAMLError as exc:
        fail(f"{name}: not YAML: {' '.join(str(exc).split())}", USAGE)
    if not isinstance(spec, dict):
        fail(f"{name}: a spec is a mapping (dataset:, architecture:, loss: ...), not {type(spec).__name__}", USAGE)
    for override in overrides:
        apply_override(spec, override)
    return spec


def parse_value(text: str) -> Any:
    """`text` as JSON (1e-4, [0.5, 0.9], true, null), else as a YAML scalar (yes, 0.5), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def apply_override(spec: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in `spec`, creating the mappings on the way; exit 2 on a malformed override."""
    path, sep, text = override.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(key.strip() for key in keys):
        fail(f"--set {override!r}: expected PATH=VALUE with a dotted PATH, e.g. loss.lr_d=1e-4", USAGE)
    node = spec
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key.strip(), {})
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            fail(f"--set {override!r}: {where} is {json.dumps(child)}, not a mapping", USAGE)
        node = child
    node[keys[-1].strip()] = parse_value(text.strip())
