"""A job spec from a file or stdin, with `--set path=value` overrides applied.

    load_spec("spec.yaml", ["loss.lr_d=1e-4", "training.steps=500"])

Every error here is a usage error (exit 2) that names the file or the `--set` at fault.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from ganforge.cli.exits import USAGE, fail
from ganforge.specfile import MAX_BYTES, SpecFileError, SpecLoader, check_values, load_spec_text, read_spec_file


def load_spec(source: str, overrides: list[str]) -> dict[str, Any]:
    """The spec in `source` (.yaml/.yml/.json path, or `-` for YAML or JSON on stdin) with `overrides` applied.

    Raises typer.Exit(2) after printing why, when the file cannot be read, is refused by
    `ganforge.specfile` (too big, too deep, YAML aliases, NaN, not YAML/JSON, not a mapping), or an
    override is malformed.
    """
    try:
        if source == "-":
            text = sys.stdin.read(MAX_BYTES + 1)
            spec = load_spec_text(text, "stdin")
        else:
            spec = read_spec_file(Path(source))
    except SpecFileError as exc:
        fail(str(exc), USAGE)
    except OSError as exc:
        fail(f"cannot read the spec {source}: {exc.strerror or exc}", USAGE)
    except UnicodeDecodeError as exc:  # stdin that is not UTF-8
        fail(f"stdin: not UTF-8 text (byte {exc.start})", USAGE)
    for override in overrides:
        apply_override(spec, override)
    return spec


def parse_value(text: str) -> Any:
    """`text` as JSON (1e-4, [0.5, 0.9], true, null), else as a YAML scalar (yes, 0.5) or flow list or map
    ([nsgan, lsgan], {name: wgan}), else the string itself.

    YAML is read by the spec files' loader: anchors, aliases and nesting deeper than MAX_DEPTH leave `text` a string,
    as does a value JSON cannot hold (a date). Only a flow collection, written in brackets or braces, is read as one:
    `a: b` stays the string it most likely is (a name, a tag).
    """
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        value = yaml.load(text, Loader=SpecLoader)  # noqa: S506 - safe, and no aliases to expand
    except (yaml.YAMLError, SpecFileError, RecursionError):
        return text
    if isinstance(value, list | dict):
        return value if text.startswith(("[", "{")) and _plain_json(value) else text
    return value if isinstance(value, str | int | float | bool) else text


def _plain_json(value: Any) -> bool:
    """Whether every key and leaf of `value` is what JSON holds (no dates, no binary, no null key); iteratively."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if not all(isinstance(key, str | int | float | bool) for key in node):
                return False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif node is not None and not isinstance(node, str | int | float | bool):
            return False
    return True


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
    value = parse_value(text.strip())
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"--set {override!r}: {value} is not a number the API takes (JSON has no NaN or infinity)", USAGE)
    try:
        check_values(value)  # a list or map as a spec file's: finite numbers, MAX_DEPTH levels at most
    except SpecFileError as exc:
        fail(f"--set {override!r}: {exc}", USAGE)
    node[keys[-1].strip()] = value
