"""Receiving a data set upload: the multipart body streamed to a temporary folder, nothing else.

    upload = await receive(request, settings=settings)   # 413 past the limit, 400 when truncated
    try:
        ...  # models.ingest.publish.ingest_upload(upload.path, upload.filename, upload.fields, ...)
    finally:
        upload.discard()

The multipart body is parsed as it arrives (python-multipart's push parser):
the file part goes straight to `data_dir/tmp/upload-*/`, never whole into
memory, and is counted against GANFORGE_MAX_UPLOAD_BYTES while it streams.
Everything an upload writes lives in that folder until the canonical files are
moved into the artifact store, and the folder is removed whatever happens, so a
refused upload leaves no file and no record behind.

The file part's name is read as RFC 7578 and RFC 6266 allow: `filename="..."`
(UTF-8, with HTML's %22/%0D/%0A escapes) or `filename*=utf-8''...` (RFC 5987
percent-encoding), the latter winning when both are sent.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from api.errors import ApiError
from models.settings import Settings

FIELDS = ("file", "name", "resize", "value_range")
MAX_FIELD_BYTES = 1024
FORM_OVERHEAD = 64 * 1024  # multipart headers and the small fields, on top of the file
# Read this much of a refused body so the client sees the answer, not a reset; below the 1 MiB of form room the
# request gate (api/gate.py) allows past GANFORGE_MAX_UPLOAD_BYTES, so the gate never answers over this answer.
DRAIN_BYTES = 512 * 1024
FLUSH_BYTES = 1024**2
MAX_BOUNDARY = 70  # RFC 2046 §5.1.1
_EXTENDED = re.compile(rb"""(?:^|;)\s*filename\*\s*=\s*"?([^;"]*)"?""", re.IGNORECASE)
_HTML_ESCAPES = {"%22": '"', "%0D": "\r", "%0A": "\n", "%0d": "\r", "%0a": "\n"}


def invalid(field: str, message: str) -> ApiError:
    """422 for a form that cannot be read as an upload, with the field path."""
    return ApiError(422, "invalid_dataset", f"{field}: {message}", [{"field": field, "message": message}])


def too_large(field: str, message: str) -> ApiError:
    """413 for a body over GANFORGE_MAX_UPLOAD_BYTES."""
    return ApiError(413, "too_large", f"{field}: {message}", [{"field": field, "message": message}])


def part_filename(disposition: bytes, options: dict[bytes, bytes]) -> str | None:
    """The file name a part's Content-Disposition gives (`filename*` first), None when it gives none."""
    extended = _EXTENDED.search(disposition)
    if extended is not None:
        charset, _, rest = extended.group(1).partition(b"'")
        _language, _, encoded = rest.partition(b"'")
        if charset.lower() not in (b"utf-8", b"iso-8859-1") or not encoded:
            raise invalid("file", "filename* must be charset'language'percent-encoded, in UTF-8 or ISO-8859-1")
        try:
            return unquote_to_bytes(encoded).decode(charset.decode("ascii"))
        except (UnicodeDecodeError, LookupError):
            raise invalid("file", "filename* is not valid text in its declared charset") from None
    if b"filename" not in options:
        return None
    name = options[b"filename"].decode("utf-8", "replace")
    return re.sub("%22|%0[DAda]", lambda match: _HTML_ESCAPES[match.group(0)], name)


@dataclass
class Upload:
    """An upload received into its own temporary folder."""

    directory: Path
    filename: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / "upload"

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class _Form:
    """python-multipart callbacks: the file part goes to disk in 1 MiB writes, the small fields to memory."""

    def __init__(self, upload: Upload, limit: int) -> None:
        self.upload, self.limit = upload, limit
        self.handle: BinaryIO | None = None
        self.pending = bytearray()
        self.part: str | None = None
        self.value = bytearray()
        self.header, self.header_value, self.disposition = bytearray(), bytearray(), b""
        self.ended = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self.header.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_end": lambda: setattr(self, "ended", True),
        }

    def _begin(self) -> None:
        self.part, self.disposition = None, b""
        self.value.clear()

    def _header_end(self) -> None:
        if bytes(self.header).lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header.clear()
        self.header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise invalid(name or "(unnamed part)", f"unknown form field; send {', '.join(FIELDS)}")
        if name in self.upload.fields or (name == "file" and self.handle is not None):
            raise invalid(name, "given more than once")
        if name == "file":
            filename = part_filename(self.disposition, options)
            if not filename:
                raise invalid("file", "must be a file part (with a filename ending in .npz or .zip)")
            self.upload.filename = filename
            self.handle = open(self.upload.path, "xb")  # noqa: SIM115 - closed by close()
        self.part = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.part == "file":
            self.upload.size += end - start
            if self.upload.size > self.limit:
                raise _too_big(self.limit)
            self.pending.extend(data[start:end])
        else:
            self.value.extend(data[start:end])
            if len(self.value) > MAX_FIELD_BYTES:
                raise invalid(self.part or "", f"longer than {MAX_FIELD_BYTES} bytes")

    def _end(self) -> None:
        if self.part != "file" and self.part is not None:
            try:
                self.upload.fields[self.part] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid(self.part, "not UTF-8 text") from None

    async def flush(self, at_least: int = 0) -> None:
        if self.handle is not None and self.pending and len(self.pending) >= at_least:
            data = bytes(self.pending)
            self.pending.clear()
            await run_in_threadpool(self.handle.write, data)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def _too_big(limit: int) -> ApiError:
    return too_large("file", f"the upload is larger than the limit of {limit} bytes (GANFORGE_MAX_UPLOAD_BYTES)")


def _malformed(field: str, message: str) -> ApiError:
    """400 for a body (or its Content-Type's boundary) the multipart parser refuses."""
    return ApiError(400, "malformed_body", f"{field}: {message}", [{"field": field, "message": message}])


def _boundary(options: dict[bytes, bytes]) -> bytes:
    """The Content-Type's boundary when RFC 2046 allows it (1 to 70 characters, no control ones); else 400."""
    boundary = options.get(b"boundary", b"")
    if not 0 < len(boundary) <= MAX_BOUNDARY or any(byte < 0x20 or byte > 0x7E for byte in boundary):
        message = f"the multipart boundary must be 1 to {MAX_BOUNDARY} printable ASCII characters (RFC 2046)"
        raise _malformed("header.content-type", message)
    return boundary


def _truncated() -> ApiError:
    message = "the upload ended early: the multipart body has no closing boundary (truncated upload?)"
    return ApiError(400, "truncated_upload", f"file: {message}", [{"field": "file", "message": message}])


async def receive(request: Request, *, settings: Settings) -> Upload:
    """Stream the multipart body into a fresh temporary folder; nothing is left there when this raises."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with the data set in the field 'file'")
    boundary = _boundary(options)
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise _too_big(limit)  # refused before reading a byte
    scratch = settings.data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    upload = Upload(directory=Path(tempfile.mkdtemp(prefix="upload-", dir=scratch)))
    form = _Form(upload, limit)
    stream = request.stream()
    try:
        try:
            try:
                parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
            except FormParserError as exc:  # a boundary the library refuses though RFC 2046 allows it
                raise _malformed("header.content-type", f"the multipart boundary cannot be used ({exc})") from None
            async for chunk in stream:
                parser.write(chunk)
                await form.flush(FLUSH_BYTES)
            await form.flush()
        except FormParserError as exc:  # every error of the multipart library: the body is at fault
            raise _malformed("body", f"the multipart body cannot be parsed ({exc})") from None
        except ApiError:
            await _drain(stream)
            raise
        except ClientDisconnect:
            raise _truncated() from None
        finally:
            form.close()
        if not form.ended:
            raise _truncated()
        if form.handle is None:
            raise invalid("file", "Field required: send the data set as the file field 'file'")
    except BaseException:
        upload.discard()
        raise
    return upload


async def _drain(stream: AsyncIterator[bytes]) -> None:
    drained = 0
    try:
        async for chunk in stream:
            drained += len(chunk)
            if drained > DRAIN_BYTES:
                break
    except ClientDisconnect:
        pass
