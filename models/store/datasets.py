"""Uploaded data sets: create (deduplicated by content), get, find, list, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models.quotas import Quotas
from models.records import Dataset, Job, JobStatus
from models.store.base import StoreBase, utcnow
from models.store.bounds import storable
from models.store.errors import DatasetInUse
from models.store.paging import keyset_page
from models.store.quota import check_upload


class DatasetsStore(StoreBase):
    """Data set records (the data itself lives in the artifact store)."""

    def get_dataset(self, *, dataset_id: str, owner: str | None = None) -> Dataset | None:
        """The data set, or None when it does not exist or belongs to another owner."""
        if not storable(dataset_id, owner):
            return None
        with self.session() as session:
            query = select(Dataset).where(Dataset.id == dataset_id)
            if owner is not None:
                query = query.where(Dataset.owner == owner)
            return session.scalar(query)

    def find_dataset(self, *, owner: str, content_hash: str) -> Dataset | None:
        """The owner's data set with this content hash, if one was uploaded before."""
        if not storable(owner, content_hash):
            return None
        with self.session() as session:
            return session.scalar(select(Dataset).where(Dataset.owner == owner, Dataset.content_hash == content_hash))

    def create_dataset(
        self,
        *,
        dataset_id: str,
        owner: str,
        name: str,
        format: str,
        info: dict[str, Any],
        content_hash: str,
        size_bytes: int,
        data_key: str,
        preview_key: str | None,
        key_id: str | None = None,
        quotas: Quotas | None = None,
    ) -> tuple[Dataset, bool]:
        """Store a new data set record; when the owner has this content already, return that one (and False).

        `key_id`: the id of the key that uploaded it (a store key's prefix, "env:<owner>", None with auth off).
        `quotas`: the owner's quotas, checked in the inserting transaction under the owner's lock
        (models/store/quota.py check_upload); None inserts unchecked.

        Raises QuotaExceeded (stored_bytes, or uploads_per_hour with retry_after) and stores nothing when the owner
        is at a quota; ValueError for text the database cannot store (NUL, lone surrogates; ingestion refuses both
        before).
        """
        if not storable(dataset_id, owner, name, format, content_hash, data_key, preview_key, key_id):
            raise ValueError("the data set's name or keys hold text the store cannot hold (NUL or a lone surrogate)")
        record = Dataset(
            id=dataset_id,
            owner=owner,
            name=name,
            format=format,
            info=info,
            content_hash=content_hash,
            size_bytes=size_bytes,
            data_key=data_key,
            preview_key=preview_key,
            created_at=utcnow(),
            key_id=key_id,
        )
        try:
            with self.session() as session, session.begin():
                if quotas is not None:
                    check_upload(session, owner=owner, quotas=quotas)
                session.add(record)
            return record, True
        except IntegrityError:
            existing = self.find_dataset(owner=owner, content_hash=content_hash)
            if existing is None:
                raise
            return existing, False

    def list_datasets(
        self, *, owner: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Dataset], str | None]:
        """The owner's data sets newest first, at most `limit` (1..1000), and the next page's cursor (None at the end).

        `cursor` is the next_cursor of the previous page; raises InvalidCursor for any other string.
        """
        with self.session() as session:
            query = select(Dataset).where(Dataset.owner == owner)
            return keyset_page(
                session, query, Dataset.seq, scope=self.cursor_scope("datasets", owner), limit=limit, cursor=cursor
            )

    def delete_dataset(self, *, dataset_id: str, owner: str) -> Dataset | None:
        """Delete the owner's data set record (None when there is none); DatasetInUse while an active job uses it."""
        if not storable(dataset_id, owner):
            return None
        with self.session() as session, session.begin():
            record = session.scalar(
                select(Dataset).where(Dataset.id == dataset_id, Dataset.owner == owner).with_for_update()
            )
            if record is None:
                return None
            users = list(
                session.scalars(
                    select(Job.id)
                    .where(Job.dataset_id == dataset_id, Job.status.in_(JobStatus.ACTIVE))
                    .order_by(Job.seq)
                    .limit(10)
                )
            )
            if users:
                raise DatasetInUse(users)
            session.delete(record)
            return record
