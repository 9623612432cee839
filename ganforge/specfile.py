"""Job spec files read safely: YAML without anchors or aliases, JSON, both size- and depth-capped.

    spec = load_spec_text(text, "spec.yaml")       # dict; SpecFileError (a ValueError) says why not
    spec = read_spec_file(Path("spec.json"))

Shared by the command line (`ganforge submit`) and the SDK (`Client.submit(path)`); it needs
PyYAML alone. A spec is small: a YAML "billion laughs" (nested aliases) would expand a
kilobyte file into gigabytes, and a document nested thousands deep exhausts the parser's
recursion, so both are refused before they cost anything.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, NodeEvent
from yaml.nodes import Node

MAX_BYTES = 1024 * 1024  # the API's limit on a JSON body
MAX_DEPTH = 32  # a spec is 3 levels deep; tags and architecture options add a couple
SUFFIXES = (".yaml", ".yml", ".json")


class SpecFileError(ValueError):
    """A spec file or text that cannot be a spec: unreadable as YAML/JSON, too big, too deep, aliased, not a mapping."""


class SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases and nesting deeper than MAX_DEPTH while composing."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor is not None):
            raise SpecFileError(f"YAML anchors and aliases (&name, *name) are not allowed in a spec{_at(event)}")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise SpecFileError(f"nested deeper than {MAX_DEPTH} levels{_at(event)}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.1 (PyYAML) reads `1e-4` and `1.5e3` as text: its float needs a dot and a signed exponent (`1.0e-4`).
# A learning rate written as in the papers must be a number, as YAML 1.2 and JSON read it; this resolver adds
# YAML 1.2's exponent forms.
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _at(event: Any) -> str:
    mark = event.start_mark
    return "" if mark is None else f" (line {mark.line + 1} column {mark.column + 1})"


def _refuse_constant(name: str) -> float:
    raise SpecFileError(f"{name} is not a number JSON (or the API) accepts")


def check_values(value: Any) -> None:
    """Refuse a tree deeper than MAX_DEPTH or holding a non-finite number (NaN, .inf): iteratively, no recursion."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecFileError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, float) and not math.isfinite(node):
            raise SpecFileError(f"{node} is not a number JSON (or the API) accepts")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)


def load_spec_text(text: str, name: str) -> dict[str, Any]:
    """The spec in `text` (JSON when `name` ends in .json, else YAML, which JSON also is); `name` prefixes errors.

    Raises SpecFileError (a ValueError, its message `name: why`) when the text is over MAX_BYTES, is not valid
    YAML/JSON, uses YAML anchors or aliases, nests deeper than MAX_DEPTH, holds NaN or infinity, or is not a
    mapping.
    """
    if len(text.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        raise SpecFileError(f"{name}: larger than {MAX_BYTES // 2**20} MiB; a spec is a few lines")
    try:
        if name.lower().endswith(".json"):
            spec = json.loads(text, parse_constant=_refuse_constant)
        else:
            spec = yaml.load(text, Loader=SpecLoader)  # noqa: S506 - a SafeLoader subclass
        check_values(spec)
    except SpecFileError as exc:
        raise SpecFileError(f"{name}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SpecFileError(f"{name}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except yaml.YAMLError as exc:
        raise SpecFileError(f"{name}: not YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:  # the JSON decoder recurses once per level
        raise SpecFileError(f"{name}: nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(spec, dict):
        raise SpecFileError(
            f"{name}: a spec is a mapping (dataset:, architecture:, loss: ...), not {type(spec).__name__}"
        )
    return spec


def read_spec_file(path: Path) -> dict[str, Any]:
    """The spec in the .yaml/.yml/.json file at `path`, read at most MAX_BYTES (+1) bytes.

    Raises SpecFileError for another suffix or content `load_spec_text` refuses (also text that is not UTF-8),
    OSError (FileNotFoundError, PermissionError, IsADirectoryError) when the file cannot be read.
    """
    if path.suffix.lower() not in SUFFIXES:
        raise SpecFileError(f"{path}: a spec file ends in .yaml, .yml or .json")
    with path.open("rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise SpecFileError(f"{path}: larger than {MAX_BYTES // 2**20} MiB; a spec is a few lines")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return load_spec_text(text, str(path))
