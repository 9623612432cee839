"""Moving files without holding them in memory: downloads written chunk by chunk (to a temporary file renamed into
place at the end, so a failed download leaves nothing), uploads read chunk by chunk, each with a progress callback.

The server does not get to choose where a file lands: a name it suggests (Content-Disposition) is used only when it
is a plain file name (`SAFE_NAME`: no folder, no leading dot, no control character), else the SDK's own. And a
file must start as its kind does (`SIGNATURES`: PNG, .npy, safetensors, the torch zip of a resume state): anything
else (an HTML page with the right Content-Type) is `UnexpectedResponse` and nothing is written.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from ganforge.client.errors import UnexpectedResponse

Progress = Callable[[int, int | None], None]
"""`progress(done_bytes, total_bytes)`: called after each chunk; total_bytes is None when the size is unknown."""

_FILENAME = re.compile(r'filename="([^"]*)"')
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


def _safetensors(head: bytes) -> bool:
    # 8 bytes little-endian: the JSON header's length, then the header itself.
    return len(head) >= 9 and 2 <= int.from_bytes(head[:8], "little") <= 100_000_000 and head[8:9] == b"{"


SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "png": lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"),
    "npy": lambda head: head.startswith(b"\x93NUMPY"),
    "safetensors": _safetensors,
    "state.pt": lambda head: head.startswith(b"PK\x03\x04"),  # torch.save writes a zip
}
HEAD_BYTES = 9  # enough of a file's start for every signature


def check_signature(kind: str, head: bytes, what: str) -> None:
    """Raise UnexpectedResponse unless `head` (the file's first bytes) starts as a `kind` file does."""
    if not SIGNATURES[kind](head):
        raise UnexpectedResponse(f"{what} is not a ganforge answer: not a {kind} file (it starts {head[:16]!r})")


class _HeldHead:
    """The first HEAD_BYTES of a download, held back until they pass `check_signature`; one for both streams."""

    def __init__(self, kind: str, what: str) -> None:
        self.kind, self.what = kind, what
        self.head = b""
        self.passed = False

    def feed(self, chunk: bytes) -> bytes:
        """What of the stream may be written now (b"" while the head is still short)."""
        if self.passed:
            return chunk
        self.head += chunk
        if len(self.head) < HEAD_BYTES:
            return b""
        check_signature(self.kind, self.head, self.what)
        self.passed = True
        released, self.head = self.head, b""
        return released

    def finish(self) -> bytes:
        """At the stream's end: a file shorter than HEAD_BYTES is checked whole and released."""
        if self.passed:
            return b""
        check_signature(self.kind, self.head, self.what)
        return self.head


def checked(chunks: Iterator[bytes], kind: str, what: str) -> Iterator[bytes]:
    """`chunks`, once their first bytes passed `check_signature`."""
    held = _HeldHead(kind, what)
    for chunk in chunks:
        if released := held.feed(chunk):
            yield released
    if rest := held.finish():
        yield rest


async def achecked(chunks: AsyncIterator[bytes], kind: str, what: str) -> AsyncIterator[bytes]:
    """`checked` for an async stream of chunks."""
    held = _HeldHead(kind, what)
    async for chunk in chunks:
        if released := held.feed(chunk):
            yield released
    if rest := held.finish():
        yield rest


def safe_name(name: str) -> str:
    """`name` made a plain file name: characters outside SAFE_NAME's as "_", no leading dot or dash."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".-")[:200]
    return cleaned or "download"


def total_bytes(response: httpx.Response) -> int | None:
    """The answer's Content-Length (bytes), None when absent or unreadable."""
    value = response.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def target_path(path: str | os.PathLike[str] | None, response: httpx.Response, fallback: str) -> Path:
    """Where a download goes: `path`, or inside it when it is a directory, or the current directory; the file name
    is the one the API suggests (Content-Disposition) when it matches SAFE_NAME, else `fallback`."""
    if path is not None and not Path(path).is_dir():
        return Path(path)
    match = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = match.group(1) if match and SAFE_NAME.fullmatch(match.group(1)) else safe_name(fallback)
    return Path(path if path is not None else ".") / name


def _umask() -> int:
    """This process's umask, read without setting it (os.umask would change it for every thread meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


class _Partial:
    """A temporary file beside `target`, renamed onto it by `commit`, removed by `discard`."""

    def __init__(self, target: Path) -> None:
        # A missing folder is the caller's typo, not a folder to create (FileNotFoundError names it).
        if not target.parent.is_dir():
            raise FileNotFoundError(f"no such directory: {target.parent}")
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        self.target, self.temp = target, Path(name)
        self.handle = os.fdopen(fd, "wb")

    def commit(self) -> Path:
        self.handle.close()
        # mkstemp makes the file 0600; the download gets the mode any new file of this user gets (umask).
        os.chmod(self.temp, 0o666 & ~_umask())
        os.replace(self.temp, self.target)
        return self.target

    def discard(self) -> None:
        self.handle.close()
        self.temp.unlink(missing_ok=True)


def write(chunks: Iterator[bytes], target: Path, total: int | None, progress: Progress | None) -> Path:
    """Write `chunks` to `target` (replacing it only once all arrived); on any error nothing is left behind."""
    partial = _Partial(target)
    try:
        done = 0
        for chunk in chunks:
            partial.handle.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        return partial.commit()
    except BaseException:
        partial.discard()
        raise


async def awrite(chunks: AsyncIterator[bytes], target: Path, total: int | None, progress: Progress | None) -> Path:
    """`write` for an async stream of chunks."""
    partial = _Partial(target)
    try:
        done = 0
        async for chunk in chunks:
            partial.handle.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        return partial.commit()
    except BaseException:
        partial.discard()
        raise


class ProgressReader:
    """A binary file that reports each read to `progress` (done, total); httpx streams a multipart file part from
    it in 64 KiB reads, and learns its size from `fileno` (so the request has a Content-Length)."""

    def __init__(self, handle: IO[bytes], total: int, progress: Progress | None) -> None:
        self.handle, self.total, self.progress = handle, total, progress
        self.done = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        if chunk and self.progress is not None:
            self.done += len(chunk)
            self.progress(self.done, self.total)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self.handle.seek(offset, whence)
        if position == 0:
            self.done = 0  # httpx rewinds before (re)sending the part
        return position

    def tell(self) -> int:
        return self.handle.tell()

    def fileno(self) -> int:
        return self.handle.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)
