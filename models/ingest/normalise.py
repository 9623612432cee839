"""An upload (a file on disk) into its canonical form and preview, in this process."""

from __future__ import annotations

from pathlib import Path

from models.ingest.archives import is_zip
from models.ingest.canonical import Canonical
from models.ingest.errors import invalid
from models.ingest.images import normalise_image_zip
from models.ingest.limits import Limits
from models.ingest.npz import normalise_npz
from models.ingest.options import IngestOptions
from models.ingest.previews import write_preview


def normalise(upload: Path, directory: Path, options: IngestOptions, limits: Limits) -> Canonical:
    """The canonical form (x.npy, y.npy, preview.png) of the file `upload`, written to the new folder `directory`.

    Raises IngestError (422/413) for content that cannot become a data set or is over a limit.
    Memory stays within a few CHUNK_BYTES whatever the upload; run it through
    models.ingest.isolated to bound it by the settings and keep it out of a serving process.
    """
    if not is_zip(upload):
        raise invalid("file", f"not a valid .{options.format} file (an .npz and a .zip are both zip archives)")
    directory.mkdir()
    read = normalise_npz if options.format == "npz" else normalise_image_zip
    canonical = read(upload, directory, limits, options)
    write_preview(directory, canonical.info)
    return canonical
