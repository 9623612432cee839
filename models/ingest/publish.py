"""From a received upload file to a stored data set: check the form, normalise (bounded), dedupe, publish."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

from models.artifacts import ArtifactStore
from models.ingest.canonical import Canonical
from models.ingest.isolated import normalise_isolated
from models.ingest.limits import Limits
from models.ingest.options import options_from_form
from models.quotas import Quotas
from models.records import Dataset
from models.store import JobStore


def ingest_upload(
    upload: Path,
    filename: str,
    fields: Mapping[str, str],
    *,
    owner: str,
    limits: Limits,
    store: JobStore,
    artifacts: ArtifactStore,
    key_id: str | None = None,
    quotas: Quotas | None = None,
) -> tuple[Dataset, bool]:
    """The data set of the file `upload` (sent as `filename` with the form's text `fields`), and whether it is new.

    The canonical form is written next to `upload` (in its folder, which the
    caller removes). The owner's earlier data set is returned (False) when the
    content is the same. `key_id`: the uploading key's id (api/deps.py Caller.key_id),
    recorded on a new data set. `quotas`: the owner's, checked again where the data set is inserted (uploads in
    flight at once passed the API's early check together). Raises IngestError (422/413) naming the field, and
    QuotaExceeded (models/store/quota.py) with nothing left in the artifact store.
    Blocks: call it from a worker thread.
    """
    options = options_from_form(filename, fields)
    canonical = normalise_isolated(upload, upload.parent / "canonical", options, limits)
    existing = store.find_dataset(owner=owner, content_hash=canonical.content_hash)
    if existing is not None:
        return existing, False
    return publish(
        canonical, owner=owner, name=options.name, store=store, artifacts=artifacts, key_id=key_id, quotas=quotas
    )


def publish(
    canonical: Canonical,
    *,
    owner: str,
    name: str,
    store: JobStore,
    artifacts: ArtifactStore,
    key_id: str | None = None,
    quotas: Quotas | None = None,
) -> tuple[Dataset, bool]:
    """Move the canonical files into the artifact store, then record the data set (the first wins a race).

    With `quotas`, the record is refused (QuotaExceeded) when the owner is at stored_bytes or uploads_per_hour; the
    files are deleted again whenever the record is not stored (a refusal, an error)."""
    dataset_id = str(uuid.uuid4())
    prefix = f"datasets/{dataset_id}"
    size_bytes = canonical.size_bytes
    try:
        for file in canonical.files:
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
            key_id=key_id,
            quotas=quotas,
        )
    except BaseException:
        artifacts.delete(prefix)
        raise
    if not created:  # the same content arrived concurrently: keep the first
        artifacts.delete(prefix)
    return dataset, created
