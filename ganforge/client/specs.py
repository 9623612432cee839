"""A job spec given to the SDK (dict, `models.spec.JobSpec`, or a .yaml/.yml/.json file) as the JSON body to post."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

from pydantic import BaseModel

from models.spec import JobSpec

SpecLike: TypeAlias = "dict[str, Any] | JobSpec | BaseModel | str | Path"
"""What `submit` and `validate` take: a dict, a `JobSpec` (a `models.study.StudySpec` for a study: any pydantic
model), or the path of a .yaml, .yml or .json file."""


def spec_body(spec: SpecLike) -> dict[str, Any]:
    """The JSON object to post for `spec`.

    A `JobSpec` (or a `StudySpec`: any pydantic model) is sent with only the fields that were set: the API fills in
    the defaults, some of which depend on the data set (a client-side default would count as the user's choice). A str or Path is a file: .yaml/.yml
    (PyYAML) or .json, read by `ganforge.specfile.read_spec_file` as the CLI reads it. Raises OSError
    (FileNotFoundError, ...) and ValueError (`SpecFileError`: another extension, over 1 MiB, not UTF-8, YAML
    anchors/aliases, nested deeper than 32, NaN/inf, not one object); the API checks the content itself
    (`ValidationFailed`).
    """
    if isinstance(spec, BaseModel):
        return spec.model_dump(mode="json", exclude_unset=True)
    if isinstance(spec, dict):
        return spec
    if isinstance(spec, str | Path):
        return _read_file(Path(spec))
    raise TypeError(f"spec must be a dict, a models.spec.JobSpec or a file path, not {type(spec).__name__}")


def _read_file(path: Path) -> dict[str, Any]:
    # One reader for the SDK and the CLI: size, depth, alias (YAML bomb) and non-finite number limits.
    from ganforge.specfile import read_spec_file

    return read_spec_file(path)
