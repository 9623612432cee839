"""Log configuration for every server process, and the job context each line carries.

    from models.logs import configure_logging, job_context
    configure_logging("json")                 # GANFORGE_LOG_FORMAT: "text" (default) or "json"
    with job_context(job_id=job.id, attempt=job.attempt, worker=name):
        log.info("claimed")                   # {"time": ..., "level": "INFO", ..., "job_id": ..., "attempt": 1, ...}

One place configures logging (the CLI's server commands, the API under uvicorn, the Celery worker and its pool
processes all call `configure_logging`). "json" writes one JSON object per line (python-json-logger) with `time`,
`level`, `logger`, `process`, `message` and, on a line logged about a job, `job_id`, `attempt` and `worker`;
"text" writes `time logger level message` with the job's fields appended as `[job_id=... attempt=... worker=...]`.

The job fields come from a context variable (a request handler's or a task's own) and, in a worker process that
runs one job at a time, from the process's current job, so the lease keeper's thread says which job it holds too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

LogFormat = Literal["text", "json"]
# The fields a line about a job carries, in this order.
JOB_FIELDS = ("job_id", "attempt", "worker")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s%(job_fields)s"
# Servers whose own loggers do not reach the root logger unless told (uvicorn's handlers print its own format).
_OWN_HANDLERS = ("uvicorn", "uvicorn.error")  # uvicorn.access: on only without --no-access-log

_context: ContextVar[dict[str, Any] | None] = ContextVar("ganforge_log_context", default=None)
# The fields of the job this process runs (a worker runs one at a time): seen from every thread.
_process_fields: dict[str, Any] = {}


class JobFields(logging.Filter):
    """Adds the current job's fields (job_id, attempt, worker: those known) to every record it passes.

    A field the call already gave (`extra={"job_id": ...}`) is kept. `record.job_fields` is the text format's
    suffix (empty when there is none).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = {**_process_fields, **(_context.get() or {})}
        for name, value in fields.items():
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        present = [f"{name}={getattr(record, name)}" for name in JOB_FIELDS if getattr(record, name, None) is not None]
        record.job_fields = f" [{' '.join(present)}]" if present else ""
        return True


@contextmanager
def job_context(*, process: bool = False, **fields: Any) -> Iterator[None]:
    """Lines logged inside carry `fields` (job_id, attempt, worker). `process`: also lines of this process's other
    threads (a worker process runs one job at a time; the API serves many at once and must not)."""
    merged = {**(_context.get() or {}), **fields}
    token = _context.set(merged)
    saved = dict(_process_fields)
    if process:
        _process_fields.update(fields)
    try:
        yield
    finally:
        _context.reset(token)
        if process:
            _process_fields.clear()
            _process_fields.update(saved)


def bind(**fields: Any) -> None:
    """Lines logged from here on in this context (a request's task) carry `fields`; ends with the context."""
    _context.set({**(_context.get() or {}), **fields})


def set_process_fields(**fields: Any) -> None:
    """Every line this process logs from now on carries `fields` (a worker process's `worker` id)."""
    _process_fields.update(fields)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of GANFORGE_LOG_FORMAT `log_format`."""
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601 in UTC
            # job_fields is the text format's suffix: the JSON line has the fields themselves.
            reserved_attrs=[*_RESERVED, "job_fields", "color_message"],
        )
    return logging.Formatter(TEXT_FORMAT)


# LogRecord's own attributes: python-json-logger writes every other attribute (an `extra`, the job fields) as a key.
_RESERVED = [
    "args",
    "asctime",
    "created",
    "exc_info",
    "exc_text",
    "filename",
    "funcName",
    "levelname",
    "levelno",
    "lineno",
    "module",
    "msecs",
    "message",
    "msg",
    "name",
    "pathname",
    "process",
    "processName",
    "relativeCreated",
    "stack_info",
    "taskName",
    "thread",
    "threadName",
]


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]  # StreamHandler is generic in typeshed only
    """The handler configure_logging installs (so a second call replaces it, never adds another)."""


def configure_logging(log_format: LogFormat = "text", level: int | str = logging.INFO) -> None:
    """Send every logger's lines through one stderr handler in `log_format` at `level` (idempotent).

    Handlers others installed on the root logger (pytest's capture) stay. In "json", uvicorn's own loggers pass
    their lines to it as well (they print uvicorn's format otherwise). Python warnings are logged too.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(JobFields())
    root.addHandler(handler)
    root.setLevel(level)
    if log_format == "json":
        for name in _OWN_HANDLERS:
            own = logging.getLogger(name)
            own.handlers.clear()
            own.propagate = True
    logging.captureWarnings(True)
    # Alembic logs each of its autogenerate plugins at INFO when it loads (7 lines a start); its migrations stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
