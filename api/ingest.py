"""Receiving a data set upload: streamed to a temporary folder, normalised once, published.

    upload = await receive(request, settings=settings)   # 413 past the limit, 400 when truncated
    try:
        dataset, created = ingest(upload, owner=owner, settings=settings, store=store, artifacts=artifacts)
    finally:
        upload.discard()

The multipart body is parsed as it arrives (python-multipart's push parser):
the file part goes straight to `data_dir/tmp/upload-*/`, never whole into
memory, and is counted against GANFORGE_MAX_UPLOAD_BYTES while it streams.
Everything an upload writes lives in that folder until the canonical files are
moved into the artifact store, and the folder is removed whatever happens, so a
refused upload leaves no file and no record behind.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from api.archives import Limits, invalid, is_zip, too_large
from api.canonical import Canonical
from api.errors import ApiError
from api.image_folders import normalise_image_zip
from api.npz import normalise_npz
from api.previews import preview_png
from models.artifacts import ArtifactStore
from models.records import Dataset
from models.settings import Settings
from models.store import JobStore

FIELDS = ("file", "name", "resize")
MAX_FIELD_BYTES = 1024
FORM_OVERHEAD = 64 * 1024  # multipart headers and the small fields, on top of the file
DRAIN_BYTES = 16 * 1024**2  # read this much of a refused body so the client sees the answer, not a reset
FLUSH_BYTES = 1024**2
RESIZE_RANGE = (4, 1024)


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
            if b"filename" not in options:
                raise invalid("file", "must be a file part (with a filename ending in .npz or .zip)")
            self.upload.filename = options[b"filename"].decode("utf-8", "replace")
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


def _truncated() -> ApiError:
    message = "the upload ended early: the multipart body has no closing boundary (truncated upload?)"
    return ApiError(400, "truncated_upload", f"file: {message}", [{"field": "file", "message": message}])


async def receive(request: Request, *, settings: Settings) -> Upload:
    """Stream the multipart body into a fresh temporary folder; nothing is left there when this raises."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with the data set in the field 'file'")
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
            parser = MultipartParser(options[b"boundary"], form.callbacks())  # type: ignore[arg-type]
            async for chunk in stream:
                parser.write(chunk)
                await form.flush(FLUSH_BYTES)
            await form.flush()
        except MultipartParseError as exc:
            raise ApiError(400, "malformed_body", f"the multipart body cannot be parsed ({exc})") from None
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


def ingest(
    upload: Upload, *, owner: str, settings: Settings, store: JobStore, artifacts: ArtifactStore
) -> tuple[Dataset, bool]:
    """Normalise a received upload and store it; the owner's earlier data set when the content is the same."""
    name, resize = _form_fields(upload)
    canonical = normalise(upload, Limits.of(settings), resize)
    existing = store.find_dataset(owner=owner, content_hash=canonical.content_hash)
    if existing is not None:
        return existing, False
    return publish(canonical, owner=owner, name=name, store=store, artifacts=artifacts)


def _form_fields(upload: Upload) -> tuple[str, int | None]:
    name = upload.fields.get("name", "").strip() or Path(upload.filename).stem.strip() or "dataset"
    if len(name) > 200 or not name.isprintable():
        raise invalid("name", "must be printable text of at most 200 characters")
    text = upload.fields.get("resize", "").strip()
    if not text:
        return name, None
    low, high = RESIZE_RANGE
    if not text.isdigit() or not low <= int(text) <= high:
        raise invalid("resize", f"must be a whole number of pixels from {low} to {high} (the square side)")
    return name, int(text)


def normalise(upload: Upload, limits: Limits, resize: int | None) -> Canonical:
    """The canonical form of an upload, in a folder next to it."""
    suffix = Path(upload.filename).suffix.lower()
    if suffix not in (".npz", ".zip"):
        raise invalid("file", f"file name {upload.filename!r}: upload an .npz of arrays or a .zip of class folders")
    if not is_zip(upload.path):
        raise invalid("file", f"not a valid {suffix} file (an .npz and a .zip are both zip archives)")
    directory = upload.directory / "canonical"
    directory.mkdir()
    if suffix == ".npz":
        return normalise_npz(upload.path, directory, limits, resize)
    return normalise_image_zip(upload.path, directory, limits, resize)


def publish(
    canonical: Canonical, *, owner: str, name: str, store: JobStore, artifacts: ArtifactStore
) -> tuple[Dataset, bool]:
    """Move the canonical files and a preview into the artifact store, then record the data set."""
    dataset_id = str(uuid.uuid4())
    prefix = f"datasets/{dataset_id}"
    x = np.load(canonical.directory / "x.npy", mmap_mode="r", allow_pickle=False)
    (canonical.directory / "preview.png").write_bytes(preview_png(x, canonical.info.kind))
    del x
    size_bytes = canonical.size_bytes
    try:
        for file in [*canonical.files, "preview.png"]:
            artifacts.put_file(f"{prefix}/{file}", canonical.directory / file)
        dataset, created = store.create_dataset(
            dataset_id=dataset_id,
            owner=owner,
            name=name,
            format=canonical.format,
            info=canonical.info.model_dump(mode="json"),
            content_hash=canonical.content_hash,
            size_bytes=size_bytes,
            data_key=prefix,
            preview_key=f"{prefix}/preview.png",
        )
    except BaseException:
        artifacts.delete(prefix)
        raise
    if not created:  # the same content arrived concurrently: keep the first
        artifacts.delete(prefix)
    return dataset, created
