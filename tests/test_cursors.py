"""Paging cursors are opaque and bound to their list (issue 12): a cursor opens only for the list and owner (or job)
it was written for, tells nothing about row counts, is refused when tampered with, and still works after the API
restarts and on another API process (the key is the store's, shared): store-level on PostgreSQL and SQLite, and
through a real API on both backends."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.db import make_engine
from models.records import DB_INT_MAX
from models.spec import JobSpec
from models.store import InvalidCursor, JobStore
from models.store.paging import CURSOR_CHARS
from tests.conftest import BACKENDS, api_only
from tests.service import TINY_SPEC, Service, create_postgres_database, drop_postgres_database

SPEC = JobSpec.model_validate(TINY_SPEC)


def _jobs(store: JobStore, owner: str, count: int) -> list[str]:
    return [store.create_job(owner=owner, spec=SPEC, idempotency_key=None)[0].id for _ in range(count)]


def _dataset(store: JobStore, owner: str, index: int) -> str:
    record, _ = store.create_dataset(
        dataset_id=f"ds-{owner}-{index}",
        owner=owner,
        name=f"d{index}",
        format="npz",
        info={},
        content_hash=f"hash-{owner}-{index}",
        size_bytes=1,
        data_key="k",
        preview_key=None,
    )
    return record.id


def _tampered(cursor: str) -> list[str]:
    """`cursor` with each character in turn changed to another base64url character."""
    swap = {"A": "B", "-": "_"}
    return [cursor[:i] + swap.get(c, "A") + cursor[i + 1 :] for i, c in enumerate(cursor)]


def test_a_cursor_opens_only_for_its_list_and_owner(store: JobStore) -> None:
    _jobs(store, "a", 3)
    _jobs(store, "b", 3)
    for index in range(3):
        _dataset(store, "a", index)
    page, jobs_cursor = store.list_jobs(owner="a", limit=1)
    assert len(page) == 1 and jobs_cursor is not None
    assert len(store.list_jobs(owner="a", limit=5, cursor=jobs_cursor)[0]) == 2  # its own list: the rest
    _, datasets_cursor = store.list_datasets(owner="a", limit=1)
    assert datasets_cursor is not None
    with pytest.raises(InvalidCursor):  # a jobs cursor is not a data sets cursor, though both page over a seq
        store.list_datasets(owner="a", cursor=jobs_cursor)
    with pytest.raises(InvalidCursor):
        store.list_jobs(owner="a", cursor=datasets_cursor)
    with pytest.raises(InvalidCursor):  # another owner's
        store.list_jobs(owner="b", cursor=jobs_cursor)
    with pytest.raises(InvalidCursor):
        store.list_studies(owner="a", cursor=jobs_cursor)
    for changed in _tampered(jobs_cursor):
        with pytest.raises(InvalidCursor):
            store.list_jobs(owner="a", cursor=changed)


def test_a_samples_cursor_opens_only_for_its_job(store: JobStore) -> None:
    first, second = _jobs(store, "a", 2)
    for job_id in (first, second):
        for step in (0, 5, 10):
            store.add_sample(job_id=job_id, step=step, count=1, png_key="k", npy_key="k", labels=None, evaluation=None)
            store.add_checkpoint(job_id=job_id, step=step, weights_key="k", state_key="k", size_bytes=1)
    _, samples_cursor = store.page_samples(job_id=first, limit=1, cursor=None)
    assert samples_cursor is not None
    assert [s.step for s in store.page_samples(job_id=first, limit=5, cursor=samples_cursor)[0]] == [5, 10]
    with pytest.raises(InvalidCursor):
        store.page_samples(job_id=second, limit=5, cursor=samples_cursor)
    with pytest.raises(InvalidCursor):
        store.page_checkpoints(job_id=first, limit=5, cursor=samples_cursor)


def test_a_cursor_tells_nothing_of_the_key_it_carries(store: JobStore) -> None:
    """The bare seq told how many jobs every owner together had made; a sealed cursor is noise of one length."""
    scope = store.cursor_scope("jobs", "a")
    cursors = [scope.seal(key) for key in (0, 1, 2, 255, 256, DB_INT_MAX)]
    assert all(len(c) == CURSOR_CHARS and c.isascii() for c in cursors)
    assert len(set(cursors)) == len(cursors)
    # Consecutive keys share no more of their text than chance would (the version byte's 1 character).
    same = sum(x == y for x, y in zip(cursors[1], cursors[2], strict=True))
    assert same < 8, (cursors[1], cursors[2])
    assert [scope.open(c, low=0) for c in cursors] == [0, 1, 2, 255, 256, DB_INT_MAX]
    with pytest.raises(InvalidCursor):  # a seq starts at 1
        scope.open(cursors[0], low=1)


def test_every_store_of_a_database_shares_one_key(tmp_path: Path) -> None:
    """Two API processes (here: two stores on their own engines, made at once) seal and open the same cursors, and
    a store made later (after a restart) still opens them: on PostgreSQL and on SQLite."""
    from migrations import upgrade

    database, postgres = create_postgres_database()
    try:
        for url in (postgres, f"sqlite:///{tmp_path / 'store.db'}"):
            upgrade(url)
            stores = [JobStore(make_engine(url)) for _ in range(4)]
            # Each store's first use reads the key, or makes it when there is none yet: all four at once.
            threads = [threading.Thread(target=store.cursor_scope, args=("jobs", "a")) for store in stores]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            cursor = stores[0].cursor_scope("jobs", "a").seal(7)
            assert all(store.cursor_scope("jobs", "a").open(cursor) == 7 for store in stores), url
            later = JobStore(make_engine(url))
            assert later.cursor_scope("jobs", "a").open(cursor) == 7
            for store in [*stores, later]:
                store.engine.dispose()
    finally:
        drop_postgres_database(database)


# --------------------------------------------------------------------------- through the API


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """An API with no worker (jobs stay queued), one per test: the restart test stops it."""
    with api_only(request.param, tmp_path) as deployment:
        yield deployment


def _refused(response: httpx.Response) -> bool:
    details = response.json()["error"]["details"] if response.status_code == 422 else []
    return response.status_code == 422 and [d["field"] for d in details] == ["query.cursor"]


@pytest.mark.slow  # two API starts per backend
def test_cursors_through_the_api_are_bound_and_survive_a_restart(api: Service) -> None:
    with api.client("key-a") as client:
        mine = [client.post("/v1/jobs", json=TINY_SPEC).json()["id"] for _ in range(3)]
        first = client.get("/v1/jobs", params={"limit": 1}).json()
        cursor = first["next_cursor"]
        assert first["jobs"][0]["id"] == mine[-1] and cursor is not None
        assert _refused(client.get("/v1/datasets", params={"cursor": cursor}))  # a jobs cursor, on data sets
        assert _refused(client.get("/v1/studies", params={"cursor": cursor}))
        assert _refused(client.get("/v1/jobs", params={"cursor": _tampered(cursor)[10]}))
        assert _refused(client.get("/v1/jobs", params={"cursor": "2"}))  # the old bare seq
    with api.client("key-b") as other:
        other.post("/v1/jobs", json=TINY_SPEC)
        assert _refused(other.get("/v1/jobs", params={"cursor": cursor}))  # team-a's cursor, read by team-b
    assert api.api is not None
    os.killpg(api.api.pid, signal.SIGTERM)
    api.api.wait(timeout=30)
    api.start_api()
    with api.client("key-a") as client:
        rest = client.get("/v1/jobs", params={"limit": 5, "cursor": cursor})
        assert rest.status_code == 200, rest.text
        assert [job["id"] for job in rest.json()["jobs"]] == mine[1::-1]
