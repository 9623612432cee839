"""A job spec given to the SDK (dict, `models.spec.JobSpec`, or a .yaml/.yml/.json file) as the JSON body to post."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeAlias

from models.spec import JobSpec

SpecLike: TypeAlias = "dict[str, Any] | JobSpec | str | Path"
"""What `submit` and `validate` take: a dict, a `JobSpec`, or the path of a .yaml, .yml or .json file."""


def spec_body(spec: SpecLike) -> dict[str, Any]:
    """The JSON object to post for `spec`.

    A `JobSpec` is sent with only the fields that were set: the API fills in the defaults, some of which depend on
    the data set (a client-side default would count as the user's choice). A str or Path is a file: .yaml/.yml
    (PyYAML) or .json. Raises FileNotFoundError, ValueError for another extension or a file that is not one
    object; the API checks the content itself (`ValidationFailed`).
    """
    if isinstance(spec, JobSpec):
        return spec.model_dump(mode="json", exclude_unset=True)
    if isinstance(spec, dict):
        return spec
    if isinstance(spec, str | Path):
        return _read_file(Path(spec))
    raise TypeError(f"spec must be a dict, a models.spec.JobSpec or a file path, not {type(spec).__name__}")


def _read_file(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"{path}: a spec file must end in .yaml, .yml or .json")
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    else:
        import yaml  # only spec files need it

        try:
            body = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not YAML: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{path}: a spec file must hold one object (mapping), got {type(body).__name__}")
    return body
