"""Uploaded data sets: upload and normalisation throughput, and the worker's batch rate on the loaded data.

    python bench/datasets.py [--mb 200] [--side 32] [--batch-size 256] [--batches 2000] [--device cpu]

1. Builds a synthetic .zip of 10 class folders of PNG images (--side px, RGB),
   about --mb MB, deflated as `zip -r` would.
2. Uploads it over HTTP, streamed, to a real uvicorn API (embedded default:
   SQLite, local artifact store): MB/s of the whole POST (receive, check,
   normalise, preview, store), then MB/s of normalisation alone, in-process.
3. Loads it as a job does (worker.uploaded.load_uploaded through models.ingest.canonical: memory-mapped when
   over 256 MB on a local store, else read into memory) and times
   worker.data.Batches on it against a plain in-memory tensor of the same
   values, in the same run: printed as ratios (1.00 = as fast as a tensor).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.artifacts import ArtifactStore  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.ingest import Limits, canonical, options_from_form  # noqa: E402
from models.ingest.normalise import normalise  # noqa: E402
from models.settings import Settings  # noqa: E402
from models.spec import DatasetRef  # noqa: E402
from models.store import JobStore  # noqa: E402
from tests.service import Service, service_env  # noqa: E402
from worker import uploaded  # noqa: E402
from worker.data import Batches  # noqa: E402
from worker.gan import LoadedData  # noqa: E402

CLASSES = 10
POOL = 1000  # distinct pictures, reused under different names: encoding 60k PNGs would dominate the bench


def synthetic_zip(path: Path, megabytes: float, side: int) -> int:
    """A zip of class folders of noisy gradient PNGs; returns the number of images."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, side)[None, :, None]
    pool = []
    for _ in range(POOL):
        noise = rng.normal(0, 40, (side, side, 3))
        pixels = np.clip(ramp * rng.uniform(0.2, 1, 3) + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        pool.append(buffer.getvalue())
    target, count = megabytes * 1e6, 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        while path.stat().st_size < target:
            for _ in range(500):
                archive.writestr(f"synthetic/class{count % CLASSES}/{count:07d}.png", pool[count % POOL])
                count += 1
            archive.fp.flush()  # type: ignore[union-attr]
    return count


def upload(service: Service, path: Path) -> tuple[dict[str, object], float]:
    with service.client() as client, open(path, "rb") as handle:
        client.timeout = httpx.Timeout(3600)
        started = time.perf_counter()
        response = client.post("/v1/datasets", files={"file": (path.name, handle, "application/zip")})
        seconds = time.perf_counter() - started
    response.raise_for_status()
    return response.json(), seconds


def normalise_only(path: Path, scratch: Path) -> tuple[float, float]:
    """Wall and CPU seconds of models.ingest.normalise.normalise on the archive (in this process)."""
    directory = Path(tempfile.mkdtemp(dir=scratch))
    options = options_from_form(path.name, {})
    started, cpu = time.perf_counter(), time.process_time()
    normalise(path, directory / "canonical", options, Limits.of(Settings(data_dir=scratch)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    shutil.rmtree(directory)
    return seconds, cpu


def batches_per_sec(batches: Batches, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        xb, _yb = batches.next()
    if batches.device.type == "cuda":
        torch.cuda.synchronize()
    del xb
    return count / (time.perf_counter() - started)


def compare(loaded: LoadedData, batch_size: int, count: int, device: str, rounds: int = 5) -> tuple[float, float]:
    """Best-of-rounds batches/s on the loaded data and on a plain in-memory copy, interleaved (a busy machine
    slows both alike)."""
    plain_x = loaded.x.clone()
    plain_y = loaded.y.clone() if loaded.y is not None else None
    target = torch.device(device)
    subjects = [
        Batches(loaded.x, loaded.y, batch_size, target, seed=1),
        Batches(plain_x, plain_y, batch_size, target, seed=1),
    ]
    for batches in subjects:  # warm-up (and, for a memory map, the first page faults)
        batches_per_sec(batches, 20)
    best = [0.0, 0.0]
    for _ in range(rounds):
        for i, batches in enumerate(subjects):
            best[i] = max(best[i], batches_per_sec(batches, max(1, count // rounds)))
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200, help="size of the synthetic zip (MB)")
    parser.add_argument("--side", type=int, default=32, help="image side (px)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = root / "synthetic.zip"
        started = time.perf_counter()
        images = synthetic_zip(archive, args.mb, args.side)
        mb = archive.stat().st_size / 1e6
        built = time.perf_counter() - started
        print(
            f"synthetic zip: {mb:.0f} MB, {images} PNG images {args.side}x{args.side} RGB, {CLASSES} classes ({built:.0f} s)"
        )

        service = Service(env=service_env(root / "service", None, None), data_dir=root / "service")
        service.data_dir.mkdir()
        service.migrate()
        service.start_api()
        try:
            dataset, seconds = upload(service, archive)
        finally:
            service.stop()
        stored = int(str(dataset["size_bytes"])) / 1e6
        print(
            f"upload over HTTP (stream, check, normalise, preview, store): {seconds:.1f} s = {mb / seconds:.1f} MB/s, {images / seconds:.0f} images/s -> {stored:.0f} MB float32"
        )
        (root / "scratch").mkdir()
        seconds, cpu = normalise_only(archive, root / "scratch")
        print(
            f"normalisation alone (in-process): {seconds:.1f} s = {mb / seconds:.1f} MB/s, {images / seconds:.0f} images/s"
            f" ({cpu:.1f} CPU s: {mb / cpu:.1f} MB per CPU-second)"
        )

        settings = Settings(data_dir=root / "service")
        store, artifacts = JobStore(make_engine(settings.database_url)), ArtifactStore(settings.artifacts_url)
        ref = DatasetRef(id=str(dataset["id"]))
        for label, threshold in (("memory-mapped", 0), ("read into memory", 1 << 62)):
            canonical.MMAP_BYTES = threshold
            started = time.perf_counter()
            data = uploaded.load_uploaded(ref, store=store, artifacts=artifacts)
            load = time.perf_counter() - started
            rate, base = compare(data, args.batch_size, args.batches, args.device)
            print(
                f"worker, {label} (loaded in {load:.2f} s): {rate:.0f} batches/s of {args.batch_size} vs plain tensor {base:.0f} batches/s on {args.device}: ratio {rate / base:.2f}"
            )
            del data


if __name__ == "__main__":
    main()
