"""The embedded broker under concurrent writers: a consumer sees every message whole, never a half-written file."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from kombu import Connection

import models.queue  # noqa: F401  (registers the atomic transport under filesystem://)

WRITERS = 2
PER_WRITER = 5
# Bodies big enough that writing one takes milliseconds: kombu's own _put leaves the empty file visible meanwhile.
BODY = 8_000_000


def _options(folder: Path) -> dict[str, object]:
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "control"),  # kombu's default is ./control, in the working directory
        "store_processed": False,
        "polling_interval": 0.0,
    }


def _write(folder: str, writer: int) -> None:
    with Connection("filesystem://localhost/", transport_options=_options(Path(folder))) as connection:
        queue = connection.SimpleQueue("jobs")
        for i in range(PER_WRITER):
            queue.put({"writer": writer, "i": i, "pad": "x" * BODY})
        queue.close()


def test_a_consumer_racing_writers_gets_every_message_whole(tmp_path: Path) -> None:
    writers = [multiprocessing.Process(target=_write, args=(str(tmp_path), w)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    seen: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 120
    with Connection("filesystem://localhost/", transport_options=_options(tmp_path)) as connection:
        queue = connection.SimpleQueue("jobs")
        while len(seen) < WRITERS * PER_WRITER and time.monotonic() < deadline:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                continue
            body = message.payload  # a half-written file fails here with a JSON decode error
            seen.add((body["writer"], body["i"]))
            assert len(body["pad"]) == BODY
            message.ack()
        queue.close()
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(seen) == WRITERS * PER_WRITER
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")], "a temporary file was left behind"
