"""Metric series in chunks (models/store/results.py, migration 0009) on PostgreSQL and SQLite: every point stored
exactly once however often a batch is written, downsampling that keeps each bucket's extremes at their steps, events
that carry no points while SSE clients still get them, and the rows of the old layout migrated."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sqlalchemy import func, select, text

from migrations import downgrade, upgrade
from models.records import JobEvent, MetricChunk
from models.store import JobStore, MetricPoint
from models.store.results import CHUNK_POINTS, EVENT_POINTS_MAX, TAIL_MERGE_POINTS
from tests.service import Service, wait_for
from tests.test_events import read_stream, spec
from tests.test_store import SPEC, _claim


def _job(store: JobStore, worker: str = "w") -> tuple[str, int]:
    job, _ = store.create_job(owner="a", spec=SPEC, idempotency_key=None)
    return job.id, _claim(store, job.id, worker).lease_token


def _series(store: JobStore, job_id: str, name: str) -> tuple[list[int], list[float]]:
    steps, values, downsampled = store.metric_series(job_id=job_id, name=name, since_step=0, max_points=100_000)
    assert not downsampled
    return steps, values


def _chunks(store: JobStore, job_id: str) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).where(MetricChunk.job_id == job_id)) or 0)


def test_a_retried_batch_and_a_replay_store_each_point_once(store: JobStore) -> None:
    job_id, token = _job(store)
    batch = [MetricPoint(name, step, step * 0.5) for step in range(0, 6000) for name in ("loss_d", "loss_g")]
    for _ in range(2):  # the commit's answer was lost: the keeper writes the same batch again
        store.record_progress(job_id=job_id, worker="w", token=token, step=5999, steps_per_sec=None, points=batch)
    assert _series(store, job_id, "loss_d") == (list(range(6000)), [s * 0.5 for s in range(6000)])
    chunks = _chunks(store, job_id)
    assert chunks == 2 * -(-6000 // CHUNK_POINTS)  # merged, not stacked
    # A resumed attempt replays steps 5000-6999 with other values: the new ones win, nothing doubles.
    replay = [MetricPoint("loss_d", step, -1.0) for step in range(5000, 7000)]
    store.record_progress(job_id=job_id, worker="w", token=token, step=6999, steps_per_sec=None, points=replay)
    steps, values = _series(store, job_id, "loss_d")
    assert steps == list(range(7000)) and values == [s * 0.5 for s in range(5000)] + [-1.0] * 2000
    assert _series(store, job_id, "loss_g")[0] == list(range(6000))
    # A stale worker (the job was claimed again) writes nothing.
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE jobs SET lease_token = lease_token + 1 WHERE id = :id"), {"id": job_id})
    late = [MetricPoint("loss_d", step, 99.0) for step in range(0, 8000)]
    assert (
        store.record_progress(job_id=job_id, worker="w", token=token, step=7999, steps_per_sec=None, points=late)
        is None
    )
    assert _series(store, job_id, "loss_d") == (steps, values)


def test_small_flushes_fill_chunks_instead_of_a_row_each(store: JobStore) -> None:
    job_id, token = _job(store)
    for start in range(0, 2 * TAIL_MERGE_POINTS, 32):  # a slow job: 32 points a flush
        points = [MetricPoint("loss", step, float(step)) for step in range(start, start + 32)]
        store.record_progress(
            job_id=job_id, worker="w", token=token, step=start + 31, steps_per_sec=None, points=points
        )
    expected = list(range(2 * TAIL_MERGE_POINTS))
    assert _series(store, job_id, "loss") == (expected, [float(s) for s in expected])
    assert _chunks(store, job_id) <= 2
    # Each event tells its own flush, not the chunk it was merged into.
    events = [e.data for e in store.events_after(job_id=job_id, after=0, limit=1000) if e.kind == "metrics"]
    assert [(e["first_step"], e["last_step"], e["count"]) for e in events] == [
        (start, start + 31, 32) for start in range(0, 2 * TAIL_MERGE_POINTS, 32)
    ]


def test_any_order_of_writes_keeps_each_series_exact_and_its_chunks_disjoint(store: JobStore) -> None:
    """Appends, retries, replays of early steps after later ones, small and large batches, series written over
    different ranges in one batch: after each write every series reads back as a model of last-write-wins, its
    chunks are sorted and disjoint, and no chunk after the batch's steps is rewritten."""
    job_id, token = _job(store)
    rng = np.random.default_rng(11)
    model: dict[str, dict[int, float]] = {"a": {}, "b": {}, "c": {}}
    top = 0
    for round_ in range(40):
        kind = rng.choice(["append", "append", "replay", "overlap", "sparse"])
        size = int(rng.choice([1, 5, 40, 700, 5000]))
        if kind == "append":
            base = top + 1
        elif kind == "replay":  # a resumed attempt: steps from well before the newest, once many chunks exist
            base = int(rng.integers(0, max(top, 1)))
        elif kind == "overlap":
            base = max(0, top - size // 2)
        else:  # far ahead, leaving a gap that a later replay may fill
            base = top + int(rng.integers(1, 20_000))
        points = []
        for name in model:
            if rng.random() < 0.3:
                continue  # this series sits the batch out
            offset = int(rng.integers(0, 50))  # series of one batch cover different steps
            for step in range(base + offset, base + offset + size, int(rng.choice([1, 1, 3]))):
                value = float(round_) + step / 1e6
                points.append(MetricPoint(name, step, value))
                model[name][step] = value
        if not points:
            continue
        top = max(top, max(p.step for p in points))
        after_batch = _chunk_ids(store, job_id, above=max(p.step for p in points))
        store.record_progress(job_id=job_id, worker="w", token=token, step=top, steps_per_sec=None, points=points)
        for name, truth in model.items():
            if truth:
                assert _series(store, job_id, name) == (sorted(truth), [truth[s] for s in sorted(truth)])
        with store.session() as session:
            rows = session.execute(
                select(MetricChunk.name, MetricChunk.first_step, MetricChunk.last_step, MetricChunk.count)
                .where(MetricChunk.job_id == job_id)
                .order_by(MetricChunk.name, MetricChunk.first_step)
            ).all()
        for name in model:
            mine = [r for r in rows if r.name == name]
            assert all(r.first_step <= r.last_step and 0 < r.count <= CHUNK_POINTS for r in mine)
            assert all(x.last_step < y.first_step for x, y in itertools.pairwise(mine)), (round_, kind, mine)
            assert sum(r.count for r in mine) == len(model[name])
        assert after_batch <= _chunk_ids(store, job_id, above=-1)  # a write rewrites no chunk after its steps


def _chunk_ids(store: JobStore, job_id: str, *, above: int) -> set[int]:
    with store.session() as session:
        return set(
            session.scalars(select(MetricChunk.id).where(MetricChunk.job_id == job_id, MetricChunk.first_step > above))
        )


def _exact(steps: np.ndarray, values: np.ndarray, max_points: int) -> dict[int, float]:
    """The expected downsample, computed point by point: ends, then each bucket's first min and first max."""
    buckets = (max_points - 2) // 2
    width = -(-(int(steps[-1]) - int(steps[0]) + 1) // buckets)
    out = {int(steps[0]): float(values[0]), int(steps[-1]): float(values[-1])}
    for b in range(buckets):
        inside = np.flatnonzero((steps - steps[0]) // width == b)
        if len(inside):
            for i in (inside[np.argmin(values[inside])], inside[np.argmax(values[inside])]):
                out[int(steps[i])] = float(values[i])
    return out


def test_downsampling_keeps_each_buckets_extremes_at_their_steps(store: JobStore) -> None:
    job_id, token = _job(store)
    rng = np.random.default_rng(7)
    steps = np.arange(0, 60_000, 3)  # 20,000 points: read from the roll-ups at max_points 100
    values = rng.standard_normal(len(steps))
    values[1234], values[15000] = 50.0, -50.0  # spikes
    points = [MetricPoint("fd", int(s), float(v)) for s, v in zip(steps, values, strict=True)]
    for start in range(0, len(points), 7000):
        chunk = points[start : start + 7000]
        store.record_progress(
            job_id=job_id, worker="w", token=token, step=chunk[-1].step, steps_per_sec=None, points=chunk
        )
    truth = dict(zip(steps.tolist(), values.tolist(), strict=True))
    for max_points in (100, 2000, 5000):  # roll-ups; raw points bucketed; raw points bucketed (a tighter bound)
        got_steps, got_values, downsampled = store.metric_series(
            job_id=job_id, name="fd", since_step=0, max_points=max_points
        )
        assert downsampled and len(got_steps) <= max_points and got_steps == sorted(set(got_steps))
        assert all(truth[s] == v for s, v in zip(got_steps, got_values, strict=True))  # real points only
        assert got_steps[0] == 0 and got_steps[-1] == int(steps[-1])
        assert (3 * 1234, 50.0) in zip(got_steps, got_values, strict=True) and (3 * 15000, -50.0) in zip(
            got_steps, got_values, strict=True
        )
        if max_points >= 2000:  # from every point: exactly the per-bucket min and max
            assert dict(zip(got_steps, got_values, strict=True)) == _exact(steps, values, max_points)
    since = store.metric_series(job_id=job_id, name="fd", since_step=30_001, max_points=100)
    assert since[0][0] == 30_003 and since[2] and all(s >= 30_001 for s in since[0])


def test_metric_events_carry_no_points_and_the_store_reads_them_back(store: JobStore) -> None:
    job_id, token = _job(store)
    points = [MetricPoint(name, step, step + 0.25) for step in range(0, 4000) for name in ("a", "b", "c")]
    store.record_progress(job_id=job_id, worker="w", token=token, step=3999, steps_per_sec=None, points=points)
    with store.session() as session:
        events = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "metrics")))
    assert all("points" not in e.data for e in events)
    assert [e.data["count"] for e in events] == [4998, 4998, 2004] and max(
        e.data["count"] for e in events
    ) <= EVENT_POINTS_MAX
    read = []
    for event in events:
        data = event.data
        read += store.metric_points(
            job_id=job_id, names=list(data["latest"]), first_step=data["first_step"], last_step=data["last_step"]
        )
        assert data["latest"] == {n: data["last_step"] + 0.25 for n in ("a", "b", "c")}
    assert read == [(p.name, p.step, p.value) for p in points]


@pytest.mark.slow
def test_migration_0009_moves_the_rows_of_each_series_into_chunks_and_back(store: JobStore) -> None:
    job_id, _token = _job(store)
    url = store.engine.url.render_as_string(hide_password=False)
    store.engine.dispose()
    downgrade(url, "0008")
    rows = [{"j": job_id, "n": n, "s": s, "v": s / 7} for n in ("loss_d", "loss_g") for s in range(0, 9000, 2)]
    with store.engine.begin() as connection:
        connection.execute(text("INSERT INTO metrics (job_id, name, step, value) VALUES (:j, :n, :s, :v)"), rows)
    store.engine.dispose()
    upgrade(url)
    assert store.metric_names(job_id=job_id) == ["loss_d", "loss_g"]
    assert _series(store, job_id, "loss_g") == (list(range(0, 9000, 2)), [s / 7 for s in range(0, 9000, 2)])
    downsampled = store.metric_series(job_id=job_id, name="loss_d", since_step=0, max_points=50)
    assert downsampled[2] and downsampled[0][-1] == 8998 and max(downsampled[1]) == 8998 / 7
    store.engine.dispose()
    downgrade(url, "0008")
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM metrics")).scalar_one() == len(rows)
    store.engine.dispose()
    upgrade(url)


def test_sse_clients_get_every_point_of_a_job_once(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=spec(60, metrics=5)).json()
        wait_for(client, job["id"], ("succeeded",))
        stream = read_stream(client, job["id"])
        series = client.get(f"/v1/jobs/{job['id']}/metrics", params={"max_points": 100_000}).json()["series"]
    sent = [tuple(p) for e in stream.events if e["event"] == "metrics" for p in e["data"]["points"]]
    stored = sorted(
        (name, step, value) for name, s in series.items() for step, value in zip(s["steps"], s["values"], strict=True)
    )
    assert sent and sorted(sent) == stored and len(sent) == len(set((n, s) for n, s, _v in sent))
