"""One error shape for every failure: {"error": {"code", "message", "details": [{"field", "message"}]}}."""

from __future__ import annotations

import difflib
import json
import logging
import re
import secrets
import sys
from collections.abc import Sequence
from typing import Any, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from models.admission import SpecProblem
from models.artifacts import ArtifactMissing
from models.catalog import ARCHITECTURE_CLASSES, LOSS_CLASSES
from models.ingest.errors import IngestError
from models.records import DB_INT_MAX
from models.spec import BuiltinName
from models.store import InvalidCursor

log = logging.getLogger(__name__)

# In a discriminated union pydantic puts the tag into the path (loss.wgan-gp.gp_weight); users wrote loss.gp_weight.
_TAGS = {"loss": set(LOSS_CLASSES), "architecture": set(ARCHITECTURE_CLASSES)}
_SOURCES = {"body", "query", "path", "header"}
_BUILTINS = " ".join(f"'{name}'" for name in get_args(BuiltinName))
# An error answer lists at most this many fields (and how many more there were): a body of 70,000 unknown fields
# must not come back as a 6 MB answer. Each field path is cut at FIELD_CHARS_MAX for the same reason.
DETAILS_MAX = 50
FIELD_CHARS_MAX = 200


# pydantic names each member of a plain union in the path (labels.list[int].0, name.function-after[...],
# init_from.InitFrom.job): a core type, a bracketed schema or a model's class name. None of them is in the request.
_LABEL = re.compile(r"[a-z][a-z-]*\[.*\]|constrained-[a-z]+|[A-Z][A-Za-z0-9_]*", re.DOTALL)
_CORE_TYPES = {"int", "float", "str", "bool", "bytes", "none", "decimal", "list", "dict", "tuple", "set", "frozenset"}
_ABSENT = object()


def _is_label(part: object) -> bool:
    return isinstance(part, str) and (part in _CORE_TYPES or _LABEL.fullmatch(part) is not None)


def clean_loc(loc: Sequence[Any], body: Any = _ABSENT) -> tuple[tuple[Any, ...], int | None]:
    """`loc` without pydantic's union-member labels and discriminator tags, and where the first label was (the
    length of the kept path before it; None when there was none).

    With the request's `body`, a part is a label only when it is not also a key of the body at that place (a tag
    key may be spelled "int"); without it, by its form alone.
    """
    node = body if loc and loc[0] == "body" else _ABSENT
    kept: list[Any] = list(loc[:1])
    union_at: int | None = None
    for part in loc[1:]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif (kept and kept[-1] in _TAGS and part in _TAGS[kept[-1]]) or _is_label(part):
            union_at = len(kept) if union_at is None else union_at
            continue
        else:
            node = _ABSENT
        kept.append(part)
    return tuple(kept), union_at


def field_path(loc: Sequence[Any]) -> str:
    """A location (cleaned by plain_errors) as the path an answer shows: "labels.0", "query.limit" (body fields
    without "body")."""
    parts = list(loc)
    if parts and parts[0] in _SOURCES and len(parts) > 1:
        source = parts.pop(0)
        if source != "body":
            parts.insert(0, source)
    # A lone surrogate (a JSON key "\ud800") cannot be encoded as UTF-8: the answer shows it escaped.
    path = ".".join(map(str, parts)).encode("utf-8", "backslashreplace").decode("utf-8")
    return path if len(path) <= FIELD_CHARS_MAX else path[:FIELD_CHARS_MAX] + "…"


def plain_errors(errors: Sequence[dict[str, Any]], body: Any = _ABSENT) -> list[dict[str, Any]]:
    """pydantic's errors with clean paths, one error per union instead of one per member.

    A union's members are tried in turn and each reports: when one got inside the value (labels.3 of a list),
    the others' "not a valid integer" is noise and is dropped; when none did, their messages become one.
    """
    cleaned: list[tuple[dict[str, Any], int | None]] = []
    for error in errors:
        if error["type"] == "json_invalid":
            cleaned.append((error, None))
            continue
        loc, union_at = clean_loc(error["loc"], body)
        cleaned.append(({**error, "loc": loc}, union_at))
    deeper = {error["loc"][:at] for error, at in cleaned if at is not None and len(error["loc"]) > at}
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    result: list[dict[str, Any]] = []
    for error, at in cleaned:
        if at is None or len(error["loc"]) > at:
            result.append(error)
        elif error["loc"] in deeper:
            continue
        elif error["loc"] in merged:
            first = merged[error["loc"]]
            message = _message(error)
            if message not in first["msg"]:
                message = (
                    message.removeprefix("Input should be ") if first["msg"].startswith("Input should") else message
                )
                first["msg"] += f", or {message}"
        else:
            merged[error["loc"]] = first = {**error, "msg": _message(error), "ctx": None, "input": None}
            result.append(first)
    return result


class ApiError(Exception):
    """An answer in the error shape: `status`, `code`, `message`, `details` ([{"field", "message"}]), response
    `headers` (e.g. Retry-After on a 429) and `extra` members of the error object (a quota's name, limit, used)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []
        self.headers, self.extra = headers, extra or {}


def error_body(code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The one error shape; past DETAILS_MAX details, the first DETAILS_MAX and `details_omitted` (how many more)."""
    details = details or []
    body: dict[str, Any] = {"code": code, "message": message, "details": details[:DETAILS_MAX]}
    if len(details) > DETAILS_MAX:
        body["details_omitted"] = len(details) - DETAILS_MAX
    return {"error": body}


def spec_problems_error(problems: list[SpecProblem]) -> ApiError:
    details = [{"field": ".".join(map(str, p.loc)), "message": p.message} for p in problems]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
    return ApiError(422, "incompatible_spec", f"the spec cannot run: {summary}", details)


def did_you_mean(value: object, choices: Sequence[str]) -> str | None:
    """The choice closest to `value` (difflib, case-insensitive), None when none is close or `value` is no text."""
    if not isinstance(value, str) or not value:
        return None
    lowered = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(value.lower()[:FIELD_CHARS_MAX], list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _quoted(text: str) -> list[str]:
    """The 'quoted' names in one of pydantic's lists ("'a', 'b' or 'c'")."""
    return re.findall(r"'([^']*)'", text)


def _name_error(error: dict[str, Any]) -> dict[str, str] | None:
    """A wrong or missing name of an enumerated field (loss.name, architecture.name, dataset.builtin, ...): the
    error on that field, its valid names and a "did you mean"; None for other errors."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # A discriminated union reports on the union (loss): the user wrote the discriminator (loss.name).
        union = field_path(error["loc"])
        key = (_quoted(str(ctx.get("discriminator", ""))) or ["name"])[0]
        owner = union.rsplit(".", 1)[-1]
        names = _quoted(str(ctx["expected_tags"])) if "expected_tags" in ctx else sorted(_TAGS.get(owner, ()))
        valid = f"valid names: {', '.join(names)}" if names else "see GET /v1/catalog"
        if kind == "union_tag_not_found":
            message = f"Field required: the {owner} {key}, one of the {valid}"
        else:
            tag = ctx.get("tag", "")
            guess = did_you_mean(tag, names)
            hint = f"; did you mean '{guess}'?" if guess else ""
            message = f"unknown {owner} {key} '{tag}'{hint} ({valid})"
        return {"field": f"{union}.{key}" if union else key, "message": message, "type": kind}
    if kind in ("model_attributes_type", "model_type") and len(error["loc"]) == 2 and error["loc"][0] == "body":
        # "loss": "nsgan" where an object is wanted: show the object the user meant.
        owner, given = error["loc"][1], error.get("input")
        if owner in _TAGS:
            names = sorted(_TAGS[owner])
            name = did_you_mean(given, names) or (given if given in names else names[0])
            example = f'"{owner}": {{"name": "{name}"}}'
        elif owner == "dataset":
            builtin = did_you_mean(given, _quoted(_BUILTINS)) or "ring8"
            example = f'"dataset": {{"builtin": "{builtin}"}} or {{"id": "<an uploaded data set\'s id>"}}'
        else:
            return None
        return {"field": owner, "message": f"{error['msg']}: write it as an object, e.g. {example}", "type": kind}
    if kind == "literal_error" and isinstance(error.get("input"), str):
        guess = did_you_mean(error["input"], _quoted(str(ctx.get("expected", ""))))
        message = error["msg"] + (f"; did you mean '{guess}'?" if guess else "")
        return {"field": field_path(error["loc"]), "message": message, "type": kind}
    return None


def json_position(document: object, offset: int) -> str:
    """ "line L, column C" (from 1) of character `offset` in the JSON text `document`; "character N" without it."""
    if not isinstance(document, str) or not 0 <= offset <= len(document):
        return f"character {offset}"
    line = document.count("\n", 0, offset) + 1
    column = offset - (document.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _detail(error: dict[str, Any], body: object = None) -> dict[str, str]:
    """One validation error as {"field", "message", "type"}: a JSON syntax error names the body, the line and the
    column; a wrong enumerated name names its field, the valid names and the closest one."""
    if error["type"] == "json_invalid":
        # FastAPI puts the character offset where the field goes: ("body", 12); the body is the decoded text.
        offset = error["loc"][-1]
        reason = error.get("ctx", {}).get("error", error["msg"])
        where = json_position(body, offset) if isinstance(offset, int) else f"character {offset}"
        return {"field": "body", "message": f"invalid JSON at {where}: {reason}", "type": "json_invalid"}
    return _name_error(error) or {"field": field_path(error["loc"]), "message": _message(error), "type": error["type"]}


def _message(error: dict[str, Any]) -> str:
    """pydantic's message, reworded where it misleads: a length bound checked after a validator on text says
    "items", a ValueError's text is prefixed "Value error, ", a number sent as text or a boolean is "not valid"."""
    ctx, kind, given = error.get("ctx") or {}, error["type"], error.get("input")
    if kind in ("too_long", "too_short") and isinstance(given, str):
        bound, limit = ("most", ctx.get("max_length")) if kind == "too_long" else ("least", ctx.get("min_length"))
        return f"String should have at {bound} {limit} characters, not {len(given)}"
    if kind in ("int_type", "float_type") and (isinstance(given, bool | str)):
        wanted = "an integer" if kind == "int_type" else "a number"
        if isinstance(given, bool):
            return f"must be {wanted}, not a boolean ({str(given).lower()})"
        # YAML 1.1 (PyYAML) reads 1e-4 as text: say how to write it as a number.
        hint = " (in YAML write 1.0e-4, not 1e-4)" if re.fullmatch(r"[+-]?[0-9.]+[eE][+-]?[0-9]+", given) else ""
        return f"must be {wanted}, not text: send {given[:40]!r} as a JSON number{hint}"
    if kind == "int_type" and isinstance(given, float):
        return f"must be an integer, not {given!r} (send it without a fraction or exponent)"
    return str(error["msg"]).removeprefix("Value error, ")


INVALID_CURSOR = "not a cursor this API returned: pass a next_cursor back unchanged, or omit cursor for the first page"


class _Huge:
    """An integer literal with more digits than Python's int() converts (sys.get_int_max_str_digits())."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def is_huge_integer(cause: BaseException) -> bool:
    """Whether `cause` is json's refusal of an integer literal over Python's digit limit (4300 by default)."""
    return isinstance(cause, ValueError) and "integer string conversion" in str(cause)


def huge_integer(document: str) -> tuple[str, int] | None:
    """Where the first integer literal too long to convert is in the JSON text `document`: its field path (as
    field_path shows it: "training.steps") and its number of digits; None when there is none or no JSON."""
    limit = sys.get_int_max_str_digits()

    def parse_int(text: str) -> int | _Huge:
        digits = len(text.lstrip("-"))
        return _Huge(digits) if limit and digits > limit else int(text)

    try:
        tree = json.loads(document, parse_int=parse_int)
    except (ValueError, RecursionError):
        return None
    # A walk with a stack, not recursion: the document may be nested as deep as json allows.
    stack: list[tuple[tuple[Any, ...], Any]] = [(("body",), tree)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, _Huge):
            return field_path(loc) or "body", node.digits
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        stack.extend(reversed([((*loc, key), child) for key, child in children]))
    return None


def out_of_range_integer(field: str, digits: int) -> dict[str, str]:
    """The detail for an integer of `digits` digits at `field`: beyond every bound this API has."""
    message = f"out of range: an integer of {digits} digits (no field takes more than {DB_INT_MAX})"
    return {"field": field, "message": message, "type": "out_of_range"}


def unreadable_body(cause: BaseException) -> str:
    """Why a JSON body could not be read, from the exception FastAPI wrapped."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8: byte {cause.start} ({cause.object[cause.start : cause.start + 1]!r}) is invalid"
    if isinstance(cause, RecursionError):
        return "the JSON is nested too deeply"
    if is_huge_integer(cause):
        return f"an integer is out of range (over {sys.get_int_max_str_digits()} digits)"
    return f"the body could not be read as JSON ({type(cause).__name__})"


def no_route(request: Request) -> str:
    """The message of a 404 for a path no route serves; with a trailing slash that a route serves without, it says
    so (the app answers a trailing slash with this 404, not a redirect, when `redirect_slashes` is off)."""
    path = request.url.path
    if path.endswith("/") and path != "/":
        trimmed = {**request.scope, "path": path.rstrip("/")}
        if any(route.matches(trimmed)[0] != Match.NONE for route in request.app.router.routes):
            return f"no route {path!r}: drop the trailing slash ({path.rstrip('/')!r})"
    return f"no route {path!r}"[: FIELD_CHARS_MAX + 10]


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """The Allow header of a 405: every method a route at this path takes (Starlette's names only the first
    matching route's, `Allow: POST` at /v1/jobs, where RFC 9110 15.5.6 asks for all of them)."""
    routes = request.app.router.routes
    # Each method asked of the routes (an included router answers for its own routes) rather than a walk of them.
    return ", ".join(
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if isinstance(exc.body, bytes | bytearray) and exc.body:
            # FastAPI parses a body as JSON only under a JSON content type and hands the route the raw bytes otherwise
            # (curl -d sends application/x-www-form-urlencoded): "not a valid dictionary" would hide the cause.
            sent = request.headers.get("content-type") or "no content-type"
            message = f"this endpoint takes a JSON body: send `Content-Type: application/json` (got {sent})"
            details = [{"field": "header.content-type", "message": message}]
            return JSONResponse(status_code=415, content=error_body("unsupported_media_type", message, details))
        errors = exc.errors()
        # Only what can be listed is formatted (a union's members merge, hence a margin): 70,000 errors would cost
        # time as well as bytes.
        read = errors[: DETAILS_MAX * 4]
        plain = plain_errors(read, exc.body)
        details = [_detail(error, exc.body) for error in plain[:DETAILS_MAX]]
        omitted = len(plain) + len(errors) - len(read) - len(details)
        summary = "; ".join(f"{d['field'] or '(body)'}: {d['message']}" for d in details[:5])
        if omitted:
            summary += f"; and {omitted} more not listed"
        content = error_body("validation_error", summary, details)
        if omitted:
            content["error"]["details_omitted"] = omitted
        return JSONResponse(status_code=422, content=content)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        content = error_body(exc.code, exc.message, exc.details)
        content["error"].update(exc.extra)
        return JSONResponse(status_code=exc.status, content=content, headers=exc.headers)

    @app.exception_handler(InvalidCursor)
    async def _invalid_cursor(_request: Request, _exc: InvalidCursor) -> JSONResponse:
        # Every paged list (jobs, data sets, studies, samples, checkpoints) reads its cursor from ?cursor=.
        details = [{"field": "query.cursor", "message": INVALID_CURSOR}]
        return JSONResponse(
            status_code=422, content=error_body("validation_error", f"query.cursor: {INVALID_CURSOR}", details)
        )

    @app.exception_handler(IngestError)
    async def _ingest_error(_request: Request, exc: IngestError) -> JSONResponse:
        details = [{"field": exc.field, "message": exc.message}]
        return JSONResponse(status_code=exc.status_hint, content=error_body(exc.code, str(exc), details))

    @app.exception_handler(ArtifactMissing)
    async def _artifact_missing(_request: Request, _exc: ArtifactMissing) -> JSONResponse:
        # A record whose file is gone (deleted by hand, lost storage): missing, not an internal error.
        message = "a file this answer needs is missing from the artifact store (deleted?)"
        return JSONResponse(status_code=404, content=error_body("artifact_missing", message))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None and is_huge_integer(exc.__cause__):
            # json refuses an integer of over 4300 digits before pydantic sees the body: find the field it is at
            # (the body was read already, so request.body() is the cached copy).
            found = huge_integer((await request.body()).decode("utf-8", "replace"))
            if found is not None:
                detail = out_of_range_integer(*found)
                content = error_body("validation_error", f"{detail['field']}: {detail['message']}", [detail])
                return JSONResponse(status_code=422, content=content)
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI could not read the JSON body for a reason other than its syntax: the same answer as a
            # syntax error (422 on `body`), with the cause, not "There was an error parsing the body".
            detail = {"field": "body", "message": unreadable_body(exc.__cause__), "type": "json_invalid"}
            content = error_body("validation_error", f"body: {detail['message']}", [detail])
            return JSONResponse(status_code=422, content=content)
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = no_route(request)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return JSONResponse(status_code=exc.status_code, content=error_body(code, message), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # The exception's message can hold paths, hosts or SQL: only the log has it, under a reference the answer gives.
        ref = secrets.token_hex(3)
        log.error("unhandled error (ref %s)", ref, exc_info=exc)
        message = f"internal error (ref {ref}); the API's log has the details"
        return JSONResponse(status_code=500, content=error_body("internal_error", message))
