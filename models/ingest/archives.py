"""Opening an uploaded archive (.zip or .npz, which is a zip) without trusting it.

Limits are checked before anything is unpacked: the entry count from the
end-of-central-directory record (so a central directory of millions of entries
is never parsed), then the declared uncompressed sizes and every entry's ratio
of unpacked to compressed bytes (zipfile never inflates a member past its
declared size: a lying header fails its CRC/size check), then every entry's
path: no absolute paths, no '..', no symbolic links, no encryption. Nothing is
ever extracted.
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
from pathlib import Path

from models.ingest.errors import invalid, too_large
from models.ingest.limits import RATIO_FLOOR_BYTES, Limits

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_DRIVE = re.compile(r"^[A-Za-z]:")


def is_zip(path: Path) -> bool:
    """Whether the file starts like a zip archive (an .npz is one)."""
    with open(path, "rb") as handle:
        return handle.read(4) in (b"PK\x03\x04", _EOCD)


def entry_count(path: Path) -> int | None:
    """The entry count the archive's end record declares (None when there is no end record)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        start = max(0, size - (65535 + 22))
        handle.seek(start)
        tail = handle.read()
        at = tail.rfind(_EOCD)
        if at < 0 or at + 22 > len(tail):
            return None
        count = int(struct.unpack_from("<H", tail, at + 10)[0])
        if count != 0xFFFF or at < 20 or tail[at - 20 : at - 16] != _ZIP64_LOCATOR:
            return count
        (offset,) = struct.unpack_from("<Q", tail, at - 12)
        if offset + 40 > size:
            return None
        handle.seek(offset)
        record = handle.read(40)
        if record[:4] != _ZIP64_EOCD:
            return None
        return int(struct.unpack_from("<Q", record, 32)[0])


def open_archive(path: Path, limits: Limits, *, npz: bool = False) -> zipfile.ZipFile:
    """The upload as a ZipFile whose every entry passed the limits and the path checks.

    Raises IngestError: 422 for a damaged archive or an unsafe entry, 413 over a limit.
    """
    count = entry_count(path)
    if count is None:
        raise invalid("file", "not a valid .zip or .npz archive (truncated or corrupt?)")
    if count > limits.archive_files:
        raise too_large("file", f"the archive holds {count} entries; at most {limits.archive_files} are accepted")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise invalid("file", f"not a valid .zip or .npz archive ({exc})") from None
    try:
        entries = archive.infolist()
        if len(entries) > limits.archive_files:
            raise too_large("file", f"the archive holds {len(entries)} entries; at most {limits.archive_files}")
        total = sum(entry.file_size for entry in entries)
        if total > limits.archive_bytes:
            raise too_large(
                "file", f"the archive unpacks to {total} bytes; at most {limits.archive_bytes} are accepted"
            )
        for entry in entries:
            check_entry(entry)
            check_ratio(entry, limits, npz=npz)
    except BaseException:
        archive.close()
        raise
    return archive


def check_ratio(entry: zipfile.ZipInfo, limits: Limits, *, npz: bool = False) -> None:
    """Refuse (413) an entry over 1 MiB that unpacks to more than GANFORGE_MAX_COMPRESSION_RATIO × its size.

    The field is `file.<array>` for an .npz member, else `file`.
    """
    ratio = entry.file_size / max(1, entry.compress_size)
    if entry.file_size > RATIO_FLOOR_BYTES and ratio > limits.compression_ratio:
        array = npz and entry.filename.endswith(".npy")
        raise too_large(
            f"file.{entry.filename[: -len('.npy')]}" if array else "file",
            f"{entry.filename!r} unpacks {entry.compress_size} bytes into {entry.file_size} "
            f"(compression ratio {ratio:.0f}); at most {limits.compression_ratio:g} (GANFORGE_MAX_COMPRESSION_RATIO)",
        )


def check_entry(entry: zipfile.ZipInfo) -> None:
    """Refuse entries that would escape a folder if extracted, links, and encrypted entries."""
    name = entry.filename
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or _DRIVE.match(name) or ".." in parts or "\x00" in name:
        raise invalid("file", f"{name!r}: unsafe path in the archive (absolute, '..' or backslash)")
    if stat.S_ISLNK(entry.external_attr >> 16):
        raise invalid("file", f"{name!r}: symbolic links are not allowed in an upload")
    if entry.flag_bits & 0x1:
        raise invalid("file", f"{name!r}: encrypted archive entries are not supported")
