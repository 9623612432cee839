"""The one artifact store: sample snapshots, checkpoints and datasets.

A local folder by default; any fsspec URL (s3://bucket/prefix with s3fs installed)
when GANFORGE_ARTIFACTS_URL says so. Keys are relative, '/'-separated paths.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

CHUNK = 1024 * 1024
# Owner-only: files 0600, folders 0700. The data dir holds every owner's data sets, checkpoints and samples, the
# embedded job store and the broker's messages; nothing there is for other users of the machine.
PRIVATE_UMASK = 0o077


def keep_files_private() -> None:
    """From now on this process, and every process it starts, creates files 0600 and folders 0700 (umask 077).

    Called where a server process starts (`ganforge migrate`/`up`, the API app, the Celery app), before it creates
    the data dir, the job store, the artifact or broker folders: files made by libraries (SQLite's database and
    journal, kombu's messages, a checkpoint's temporary file) follow the umask, not a mode of ours.
    """
    os.umask(PRIVATE_UMASK)


def job_prefix(job_id: str) -> str:
    """The folder-like key under which all of a job's artifacts live (samples, checkpoints)."""
    return f"jobs/{job_id}"


class ArtifactMissing(FileNotFoundError):
    """A key names no object: its record exists but the file was deleted or never written (the API: 404)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"artifact {key!r} is missing from the artifact store")
        self.key = key


class ArtifactStore:
    """The artifact store at `url` (a folder, or an fsspec URL such as s3://bucket/prefix) opened with `options`
    (fsspec storage options, GANFORGE_ARTIFACTS_OPTIONS: e.g. {"endpoint_url": ...} for an S3-compatible server)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            Path(self.root).mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts) or key.startswith("/"):
            raise ValueError(f"bad artifact key {key!r}")
        return f"{self.root}/{key}"

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write atomically: readers see the old object or the whole new one."""
        path = self._path(key)
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def put_file(self, key: str, source: str | os.PathLike[str]) -> None:
        """Move a finished local file into the store (atomic rename when the store is local)."""
        path = self._path(key)
        if not self.is_local:
            self.fs.put_file(os.fspath(source), path)
            os.unlink(source)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.replace(source, path)
        except OSError:  # another file system: copy next to it, then rename
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            self.fs.put_file(os.fspath(source), tmp)
            os.replace(tmp, path)
            os.unlink(source)

    def open(self, key: str) -> BinaryIO:
        """The object for reading; raises ArtifactMissing when there is none."""
        try:
            return self.fs.open(self._path(key), "rb")  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise ArtifactMissing(key) from None

    def open_sized(self, key: str) -> tuple[BinaryIO, int]:
        """The object opened for reading and its size in bytes; raises ArtifactMissing when there is none.

        Opened before anything is sent, so a missing file is an error answer, never a response cut short.
        """
        handle = self.open(key)
        try:
            return handle, self.size(key)
        except BaseException:
            handle.close()
            raise

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """Stream an object without holding it in memory."""
        with self.open(key) as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def size(self, key: str) -> int:
        """The object's size in bytes; raises ArtifactMissing when there is none."""
        try:
            return int(self.fs.size(self._path(key)))
        except FileNotFoundError:
            raise ArtifactMissing(key) from None

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def local_path(self, key: str) -> str | None:
        """A path the worker can memory-map, when the store is local."""
        return self._path(key) if self.is_local else None

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix` (a folder-like key), sorted; empty when there are none.

        Read from the store each time: an object store's listing is not cached here (another process may have
        written or deleted since)."""
        path = self._path(prefix)
        if not self.is_local:
            self.fs.invalidate_cache(path)
        if not self.fs.exists(path):
            return []
        found = self.fs.find(path)
        root = self.fs._strip_protocol(self.root)
        return sorted(str(p)[len(root) + 1 :] for p in found)

    def delete(self, key: str) -> None:
        """Delete the object at `key`, or every object under it when it is a folder-like key; nothing there is
        no error."""
        path = self._path(key)
        if not self.is_local:
            self.fs.invalidate_cache(path)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
        if not self.is_local:
            self.fs.invalidate_cache(path)
