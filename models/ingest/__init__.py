"""Data set ingestion: an uploaded .npz or zip of image class folders into one canonical stored form.

The call path of an upload, from the route to the stored data set:

    api/routes/datasets.py  upload_dataset
      api/multipart.py        receive: the multipart body streamed to a temporary folder (size limit)
      models/ingest/publish.py  ingest_upload (in the API's threadpool)
        options.py              options_from_form: name, format, resize, value_range (422 naming the field)
        isolated.py             normalise_isolated: a subprocess with RLIMIT_AS and a timeout runs
          normalise.py            normalise
            archives.py             open_archive: entry count, sizes, compression ratio, paths
            npz.py | images.py      the readers: npy.py streams arrays (Fortran order too), labels.py counts
                                    labels in chunks, pixels.py reads every Pillow mode, values.py the ranges
            canonical.py            CanonicalWriter: x.npy, y.npy, the content hash
            previews.py             preview.png
        store.find_dataset      the owner's same content: that data set (200)
        publish                 files into the artifact store, then the record (201)

The worker reads the stored form with canonical.read_canonical. Everything
refused raises IngestError(field, message, status_hint), which the API maps to
its one error shape. The canonical form is described once, in canonical.py.
"""

from models.ingest.canonical import Canonical, CanonicalMismatch, read_canonical
from models.ingest.errors import IngestError
from models.ingest.limits import Limits
from models.ingest.options import RESIZE_RANGE, IngestOptions, options_from_form

__all__ = [
    "RESIZE_RANGE",
    "Canonical",
    "CanonicalMismatch",
    "IngestError",
    "IngestOptions",
    "Limits",
    "options_from_form",
    "read_canonical",
]
