"""Data set ingestion (models/ingest): value ranges of every dtype and image mode, bounded streaming, names.

In-process tests call the domain directly; the HTTP tests post to a real uvicorn
API (no worker needed) on both backends and read what it stored. The hostile
uploads of issue 9 (fault 13) measure the API's memory and /healthz latency
while they are normalised; run with `-s` to see the figures.
"""

from __future__ import annotations

import bz2
import io
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from models.artifacts import ArtifactStore
from models.datasets import DatasetInfo
from models.ingest import IngestError, Limits, canonical, labels, npy, npz, options_from_form, read_canonical
from models.ingest.isolated import normalise_isolated
from models.ingest.normalise import normalise
from models.ingest.options import dataset_name
from models.ingest.pixels import decode
from tests.conftest import BACKENDS, api_only
from tests.service import Service

LIMITS = Limits(archive_bytes=8 * 1024**3, archive_files=500_000, dataset_bytes=16 * 1024**3, classes=1000)
ONE_STEP = 2 / 255  # one 8-bit step of [-1, 1]


# --------------------------------------------------------------------------- building uploads


def npz_bytes(compressed: bool = False, **arrays: Any) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def picture_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def ramp(dtype: Any, count: int = 4096) -> np.ndarray:
    """`count` values from the dtype's smallest to its largest, evenly spaced (exact integers)."""
    info = np.iinfo(dtype)
    low, high = int(info.min), int(info.max)
    return np.array([low + (high - low) * k // (count - 1) for k in range(count)], dtype=dtype)


def ingest(tmp_path: Path, filename: str, data: bytes, limits: Limits = LIMITS, **fields: str) -> np.ndarray:
    """Normalise in this process; the stored x (the info is in `ingest.info`)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "upload").write_bytes(data)
    result = normalise(tmp_path / "upload", tmp_path / "canonical", options_from_form(filename, fields), limits)
    ingest.info = result.info  # type: ignore[attr-defined]
    return np.load(tmp_path / "canonical" / "x.npy")


def refused(tmp_path: Path, filename: str, data: bytes, limits: Limits = LIMITS, **fields: str) -> IngestError:
    with pytest.raises(IngestError) as caught:
        ingest(tmp_path, filename, data, limits, **fields)
    return caught.value


# --------------------------------------------------------------------------- fault 6: numpy dtypes


def _images(values: np.ndarray) -> np.ndarray:
    """Values as N×H×W images (16×16 px), N = len/256."""
    return values.reshape(-1, 16, 16)


FULL_RANGE = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]


@pytest.mark.parametrize("dtype", FULL_RANGE)
def test_integer_images_are_scaled_by_their_dtypes_range(tmp_path: Path, dtype: str) -> None:
    values = ramp(dtype)
    x = ingest(tmp_path, "ramp.npz", npz_bytes(x=_images(values)))
    info: DatasetInfo = ingest.info  # type: ignore[attr-defined]
    low, high = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    assert (info.source_dtype, info.source_range) == (dtype, (low, high))
    right = (values.astype(np.float64) - low) / (high - low) * 2 - 1
    assert (x.min(), x.max()) == (-1.0, 1.0) and np.allclose(x.ravel(), right, atol=1e-6)
    assert abs(float(x.mean())) < 5e-3  # a ramp over the whole range is centred (integer steps shift it a little)
    assert info.warnings == ()


def test_bool_images_are_black_and_white(tmp_path: Path) -> None:
    checker = (np.indices((4, 16, 16)).sum(axis=0) % 2).astype(bool)
    x = ingest(tmp_path, "bool.npz", npz_bytes(x=checker))
    assert set(np.unique(x)) == {-1.0, 1.0} and float(x.mean()) == 0.0
    assert ingest.info.source_range == (0.0, 1.0)  # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_float_images_use_the_convention_that_holds_them(tmp_path: Path, dtype: str, low: float, high: float) -> None:
    values = np.linspace(low, high, 1024).astype(dtype)
    x = ingest(tmp_path, "float.npz", npz_bytes(x=_images(values)))
    assert ingest.info.source_range == (low, high)  # type: ignore[attr-defined]
    assert (x.min(), x.max()) == (-1.0, 1.0) and abs(float(x.mean())) < 1e-3


def test_float_images_outside_every_convention_are_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, "hdr.npz", npz_bytes(x=_images(np.linspace(0, 1000, 512))))
    assert (error.field, error.status_hint) == ("file.x", 422) and "value_range" in error.message


def test_twelve_bit_values_in_uint16_are_kept_dark_with_a_warning(tmp_path: Path) -> None:
    x = ingest(tmp_path, "camera.npz", npz_bytes(x=_images(np.linspace(0, 4095, 1024).astype(np.uint16))))
    assert x.min() == -1.0 and abs(float(x.max()) - (4095 / 65535 * 2 - 1)) < 1e-6
    warnings = ingest.info.warnings  # type: ignore[attr-defined]
    assert len(warnings) == 1 and "dark" in warnings[0] and "6.2%" in warnings[0]


@pytest.mark.parametrize(
    ("dtype", "high", "shade"), [("uint16", 255, "black"), ("int64", 255, "gray"), ("int32", 65535, "gray")]
)
def test_values_spanning_a_sliver_of_their_dtype_are_refused(tmp_path: Path, dtype: str, high: int, shade: str) -> None:
    """8-bit values kept in a wider integer dtype would train on a blank picture."""
    error = refused(tmp_path, "narrow.npz", npz_bytes(x=_images(np.linspace(0, high, 1024).astype(dtype))))
    assert (error.field, error.status_hint) == ("file.x", 422)
    assert "blank" in error.message and shade in error.message and "value_range" in error.message


def test_value_range_states_the_range_of_partial_integers(tmp_path: Path) -> None:
    values = np.arange(1024) % 256
    data = npz_bytes(x=_images(values.astype(np.int64)))
    x = ingest(tmp_path, "mnist-int64.npz", data, value_range="0,255")
    assert (x.min(), x.max()) == (-1.0, 1.0) and np.allclose(x.ravel(), values / 127.5 - 1, atol=1e-6)
    assert abs(float(x.mean())) < 1e-6
    assert ingest.info.source_range == (0.0, 255.0)  # type: ignore[attr-defined]
    error = refused(tmp_path / "again", "mnist-int64.npz", data, value_range="0,200")
    assert error.field == "file.x" and "outside value_range" in error.message


@pytest.mark.parametrize("text", ["1", "5,5", "a,b", "0,inf", "1,0"])
def test_a_bad_value_range_is_refused(tmp_path: Path, text: str) -> None:
    error = refused(tmp_path, "x.npz", npz_bytes(x=np.zeros((2, 8, 8), np.uint8)), value_range=text)
    assert error.field == "value_range"


def test_value_range_is_refused_for_rows_and_zips(tmp_path: Path) -> None:
    rows = refused(tmp_path / "rows", "rows.npz", npz_bytes(x=np.zeros((4, 2))), value_range="0,1")
    pictures = refused(tmp_path / "zip", "pictures.zip", zip_bytes({"a/1.png": b""}), value_range="0,1")
    assert rows.field == pictures.field == "value_range"


@pytest.mark.parametrize(("fill", "shade"), [(0, "black"), (255, "white"), (128, "gray")])
def test_constant_images_are_refused(tmp_path: Path, fill: int, shade: str) -> None:
    error = refused(tmp_path, "blank.npz", npz_bytes(x=np.full((4, 8, 8), fill, np.uint8)))
    assert error.field == "file.x" and "blank" in error.message and shade in error.message


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int64", "uint64", "float16", "float64", "bool"])
def test_rows_are_stored_as_they_are(tmp_path: Path, dtype: str) -> None:
    rows = (np.arange(60).reshape(30, 2) % 7 - (0 if dtype.startswith("u") or dtype == "bool" else 3)).astype(dtype)
    x = ingest(tmp_path, "rows.npz", npz_bytes(x=rows))
    assert x.dtype == np.float32 and np.array_equal(x, rows.astype(np.float32))
    assert ingest.info.source_dtype == dtype and ingest.info.warnings == ()  # type: ignore[attr-defined]


def test_rows_that_are_one_point_get_a_warning(tmp_path: Path) -> None:
    ingest(tmp_path, "same.npz", npz_bytes(x=np.full((5, 3), 2.5)))
    assert ingest.info.warnings == ("every row is the same point (2.5, 2.5, 2.5)",)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- fault 6: Pillow modes


def _gradient(size: int = 16) -> np.ndarray:
    """8-bit gray ramp 0..255 along x (mean 127.5)."""
    return np.tile(np.round(np.linspace(0, 255, size)).astype(np.uint8), (size, 1))


def _sixteen(mode: str) -> Image.Image:
    values = np.tile(np.round(np.linspace(0, 65535, 16)).astype(np.uint16), (16, 1))
    order = ">u2" if mode == "I;16B" else "<u2" if mode in ("I;16", "I;16L") else "=u2"
    return Image.frombytes(mode, (16, 16), values.astype(order).tobytes())


def _with_alpha(mode: str) -> Image.Image:
    """Black pixels, left half opaque, right half transparent: composited over white → half -1, half +1."""
    alpha = np.zeros((16, 16), np.uint8)
    alpha[:, :8] = 255
    gray = np.zeros((16, 16), np.uint8)
    if mode in ("LA", "La"):
        image = Image.fromarray(np.stack([gray, alpha], axis=-1), "LA")
    else:
        image = Image.fromarray(np.stack([gray, gray, gray, alpha], axis=-1), "RGBA")
    return image if image.mode == mode else image.convert(mode)


def _palette(alpha: bool) -> Image.Image:
    image = Image.fromarray(_gradient(), "P")
    image.putpalette([v for i in range(256) for v in (i, i, i)])
    if alpha:
        image = image.convert("PA")
    return image


def _ycbcr_like(mode: str) -> Image.Image:
    ramp8 = _gradient()
    other = np.full((16, 16), 128 if mode == "YCbCr" else 0, np.uint8)
    if mode == "HSV":
        return Image.fromarray(np.stack([other, other, ramp8], axis=-1), "HSV")
    return Image.fromarray(np.stack([ramp8, other, other], axis=-1), mode)


MODES: dict[str, Callable[[], Image.Image]] = {
    "1": lambda: Image.fromarray((np.indices((16, 16)).sum(axis=0) % 2).astype(bool)),
    "L": lambda: Image.fromarray(_gradient(), "L"),
    "P": lambda: _palette(alpha=False),
    "PA": lambda: _palette(alpha=True),
    "RGB": lambda: Image.fromarray(np.stack([_gradient()] * 3, axis=-1), "RGB"),
    "RGBX": lambda: Image.fromarray(np.stack([_gradient()] * 3, axis=-1), "RGB").convert("RGBX"),
    "CMYK": lambda: Image.fromarray(np.stack([np.zeros((16, 16), np.uint8)] * 3 + [_gradient()], axis=-1), "CMYK"),
    "YCbCr": lambda: _ycbcr_like("YCbCr"),
    "LAB": lambda: _ycbcr_like("LAB"),
    "HSV": lambda: _ycbcr_like("HSV"),
    "LA": lambda: _with_alpha("LA"),
    "La": lambda: _with_alpha("La"),
    "RGBA": lambda: _with_alpha("RGBA"),
    "RGBa": lambda: _with_alpha("RGBa"),
    "I;16": lambda: _sixteen("I;16"),
    "I;16B": lambda: _sixteen("I;16B"),
    "I;16L": lambda: _sixteen("I;16L"),
    "I;16N": lambda: _sixteen("I;16N"),
    "I": lambda: Image.fromarray(np.tile(ramp(np.int32, 16), (16, 1)), "I"),
}
# Each mode's pixels against the right answer: (channels, source range, min, max, mean).
EXPECTED = {
    "1": (1, (0, 1), -1.0, 1.0, 0.0),
    "L": (1, (0, 255), -1.0, 1.0, 0.0),
    "P": (3, (0, 255), -1.0, 1.0, 0.0),
    "PA": (3, (0, 255), -1.0, 1.0, 0.0),
    "RGB": (3, (0, 255), -1.0, 1.0, 0.0),
    "RGBX": (3, (0, 255), -1.0, 1.0, 0.0),
    "CMYK": (3, (0, 255), -1.0, 1.0, 0.0),  # K ramp 0..255 → RGB 255..0
    "YCbCr": (3, (0, 255), -1.0, 1.0, 0.0),  # neutral chroma: a gray ramp
    "HSV": (3, (0, 255), -1.0, 1.0, 0.0),  # no saturation: V is gray
    "LA": (1, (0, 255), -1.0, 1.0, 0.0),
    "La": (1, (0, 255), -1.0, 1.0, 0.0),
    "RGBA": (3, (0, 255), -1.0, 1.0, 0.0),
    "RGBa": (3, (0, 255), -1.0, 1.0, 0.0),
    "I;16": (1, (0, 65535), -1.0, 1.0, 0.0),
    "I;16B": (1, (0, 65535), -1.0, 1.0, 0.0),
    "I;16L": (1, (0, 65535), -1.0, 1.0, 0.0),
    "I;16N": (1, (0, 65535), -1.0, 1.0, 0.0),
    "I": (1, (-(2**31), 2**31 - 1), -1.0, 1.0, 0.0),
}


def test_every_pillow_mode_is_covered() -> None:
    assert set(Image.MODES) == set(MODES) | {"F"}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_each_pillow_mode_is_read_by_its_real_range(mode: str) -> None:
    image = MODES[mode]()
    assert image.mode == mode
    channels, source, low, high, mean = EXPECTED[mode]
    picture = decode(image, channels, "x.png")
    values = picture.values
    assert values.shape == (channels, 16, 16) and values.dtype == np.float32
    assert (picture.mode, picture.source_range) == (mode, (float(source[0]), float(source[1])))
    assert (float(values.min()), float(values.max())) == pytest.approx((low, high), abs=1e-6)
    assert float(values.mean()) == pytest.approx(mean, abs=0.01)
    assert picture.alpha == (mode in ("LA", "La", "PA", "RGBA", "RGBa"))


@pytest.mark.parametrize("mode", ["L", "P", "RGB"])
def test_a_png_transparency_key_is_composited_over_white(mode: str) -> None:
    """The ramp's black column is the key: it becomes white (+1); the rest is the ramp."""
    image = MODES[mode]()
    key = (0, 0, 0) if mode == "RGB" else 0
    with Image.open(io.BytesIO(_keyed_png(image, key))) as keyed:
        assert keyed.mode == mode and "transparency" in keyed.info
        picture = decode(keyed, 1 if mode == "L" else 3, "keyed.png")
    right = _gradient().astype(np.float64) / 127.5 - 1
    right[:, 0] = 1.0
    assert picture.alpha and np.allclose(picture.values, right[None], atol=1e-6)


def _keyed_png(image: Image.Image, key: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=key)
    return buffer.getvalue()


def test_lab_is_converted_to_srgb_as_pillow_does() -> None:
    image = MODES["LAB"]()
    expected = np.asarray(image.convert("RGB"), np.float64).transpose(2, 0, 1) / 127.5 - 1
    assert np.allclose(decode(image, 3, "x.png").values, expected, atol=1e-6)
    assert expected.min() == -1.0 and expected.max() > 0.99  # L* 0..100 is black to white


def test_floating_point_pictures_are_refused() -> None:
    with pytest.raises(IngestError) as caught:
        decode(Image.fromarray(np.zeros((8, 8), np.float32), "F"), 1, "x.tif")
    assert caught.value.field == "file" and "mode F" in caught.value.message


ZIPPED = [  # (mode, format, channels, source_dtype, alpha)
    ("1", "PNG", 1, "1", ""),
    ("L", "PNG", 1, "L", ""),
    ("P", "PNG", 3, "P", ""),
    ("LA", "PNG", 1, "LA", "composited over white"),
    ("RGB", "PNG", 3, "RGB", ""),
    ("RGBA", "PNG", 3, "RGBA", "composited over white"),
    ("I;16", "PNG", 1, "I;16", ""),
    ("CMYK", "JPEG", 3, "CMYK", ""),
]


@pytest.mark.parametrize(("mode", "fmt", "channels", "source", "alpha"), ZIPPED, ids=[z[0] for z in ZIPPED])
def test_a_zip_of_each_storable_mode_is_read_faithfully(
    tmp_path: Path, mode: str, fmt: str, channels: int, source: str, alpha: str
) -> None:
    extension = "png" if fmt == "PNG" else "jpg"
    data = zip_bytes({f"a/{i}.{extension}": picture_bytes(MODES[mode](), fmt) for i in range(3)})
    x = ingest(tmp_path, "modes.zip", data)
    info: DatasetInfo = ingest.info  # type: ignore[attr-defined]
    assert (info.shape, info.source_dtype, info.alpha) == ((channels, 16, 16), source, alpha)
    tolerance = 0.05 if fmt == "JPEG" else 1e-6  # JPEG is lossy
    assert float(x.min()) == pytest.approx(-1.0, abs=tolerance) and float(x.max()) == pytest.approx(1.0, abs=tolerance)
    assert float(x.mean()) == pytest.approx(0.0, abs=0.02)


def test_sixteen_bit_png_gradient_spans_the_range_not_white(tmp_path: Path) -> None:
    """Fault 6's input: 16-bit gray PNGs 0..65535 made 99.6 % of pixels +1."""
    values = np.tile(np.round(np.linspace(0, 65535, 64)).astype(np.uint16), (64, 1))
    data = zip_bytes({f"scans/{i}.png": picture_bytes(Image.fromarray(values)) for i in range(4)})
    x = ingest(tmp_path, "scans.zip", data)
    assert (x.min(), x.max()) == (-1.0, 1.0) and abs(float(x.mean())) < 1e-3
    assert float((x == 1.0).mean()) == pytest.approx(1 / 64)  # one column of 64 is white


def test_a_zip_mixing_gray_and_colour_modes_keeps_each_range(tmp_path: Path) -> None:
    data = zip_bytes({"a/1.png": picture_bytes(MODES["I;16"]()), "a/2.png": picture_bytes(MODES["RGB"]())})
    x = ingest(tmp_path, "mixed.zip", data)
    info: DatasetInfo = ingest.info  # type: ignore[attr-defined]
    assert (info.shape, info.source_dtype, info.source_range) == ((3, 16, 16), "I;16, RGB", None)
    assert "I;16 0..65535" in info.description and "RGB 0..255" in info.description
    assert np.allclose(x[0], x[1], atol=1e-2)  # the same ramp, whichever depth it came in


def test_a_zip_of_blank_pictures_is_refused(tmp_path: Path) -> None:
    black = picture_bytes(Image.fromarray(np.zeros((8, 8), np.uint8)))
    error = refused(tmp_path, "night.zip", zip_bytes({"a/1.png": black, "a/2.png": black}))
    assert (error.field, error.status_hint) == ("file", 422) and "blank (black)" in error.message


# --------------------------------------------------------------------------- fault 13: streaming in bounded memory


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 4 kB, so that a few hundred rows take every path of the streaming code."""
    for module in (npy, npz, labels, canonical):
        monkeypatch.setattr(module, "CHUNK_BYTES", 4096)


FORTRAN_SHAPES = [(3000, 2), (3, 40, 50), (50, 40, 30), (200, 12, 10, 3), (30, 3, 9, 11), (700, 1)]


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("shape", FORTRAN_SHAPES, ids=["x".join(map(str, s)) for s in FORTRAN_SHAPES])
def test_fortran_ordered_x_is_streamed_to_the_same_data(tmp_path: Path, shape: tuple[int, ...]) -> None:
    """Tall, wide and square tiles of the on-disk transpose, against the C-ordered upload."""
    values = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    c_order = ingest(tmp_path / "c", "c.npz", npz_bytes(x=values))
    fortran = ingest(tmp_path / "f", "f.npz", npz_bytes(True, x=np.asfortranarray(values)))
    assert np.array_equal(c_order, fortran)


@pytest.mark.usefixtures("small_chunks")
def test_labels_are_counted_and_mapped_in_chunks(tmp_path: Path) -> None:
    y = np.random.default_rng(2).choice([-7, 3, 10, 2**40], size=5000)
    ingest(tmp_path / "c", "y.npz", npz_bytes(x=np.zeros((5000, 2)), y=np.asfortranarray(y[:, None])))
    classes, index = np.unique(y, return_inverse=True)
    assert ingest.info.class_names == tuple(str(c) for c in classes)  # type: ignore[attr-defined]
    assert np.array_equal(np.load(tmp_path / "c" / "canonical" / "y.npy"), index)
    error = refused(tmp_path / "f", "many.npz", npz_bytes(x=np.zeros((3000, 2)), y=np.arange(3000) % 1500))
    assert error.field == "file.y" and "1500 distinct labels" in error.message


def test_an_entry_over_the_compression_ratio_is_413(tmp_path: Path) -> None:
    bomb = npz_bytes(True, x=np.zeros((2_000_000, 2), np.uint8))  # 4 MB of zeros in about 4 kB
    error = refused(tmp_path / "a", "bomb.npz", bomb)
    assert (error.field, error.status_hint) == ("file.x", 413) and "compression ratio" in error.message
    png = zip_bytes({"a/1.png": b"\0" * 4_000_000})
    error = refused(tmp_path / "b", "bomb.zip", png)
    assert (error.field, error.status_hint) == ("file", 413) and "GANFORGE_MAX_COMPRESSION_RATIO" in error.message


def test_the_subprocess_answers_with_the_readers_refusal_and_its_limits(tmp_path: Path) -> None:
    (tmp_path / "upload").write_bytes(npz_bytes(x=np.full((4, 8, 8), 7, np.uint8)))
    options = options_from_form("blank.npz", {})
    for name, limits, status, fragment in [
        ("refusal", LIMITS, 422, "blank"),
        ("time", Limits(**{**LIMITS.as_dict(), "timeout_seconds": 0.001}), 413, "GANFORGE_INGEST_TIMEOUT_SECONDS"),
    ]:
        with pytest.raises(IngestError) as caught:
            normalise_isolated(tmp_path / "upload", tmp_path / name, options, limits)
        assert (caught.value.status_hint, fragment in caught.value.message) == (status, True), caught.value


def test_the_subprocess_runs_out_of_memory_as_a_413(tmp_path: Path) -> None:
    huge = Image.fromarray(np.zeros((4096, 4096, 4), np.uint8), "RGBA")  # 256 MB as float32 RGB planes
    (tmp_path / "upload").write_bytes(zip_bytes({"a/1.png": picture_bytes(huge)}))
    limits = Limits(**{**LIMITS.as_dict(), "memory_bytes": 300 * 1024**2, "compression_ratio": 1e9})
    with pytest.raises(IngestError) as caught:
        normalise_isolated(tmp_path / "upload", tmp_path / "canonical", options_from_form("big.zip", {}), limits)
    assert caught.value.status_hint == 413 and "GANFORGE_INGEST_MEMORY_BYTES" in caught.value.message


# --------------------------------------------------------------------------- fault 12: names


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("👩‍💻-faces.npz", "👩‍💻-faces"),
        ("dögn.NPZ", "dögn"),
        ("C:\\fakepath\\cats.zip", "cats"),
        ("bell\x07and\ttab\nnew.npz", "bellandtabnew"),
        ("\u202eevil.npz", "evil"),
        ("   .npz", "dataset"),
        ("é" * 300 + ".npz", "é" * 200),
    ],
)
def test_a_missing_name_comes_from_the_file_name(filename: str, name: str) -> None:
    assert dataset_name("", filename) == name


def test_a_given_name_with_control_characters_is_refused() -> None:
    with pytest.raises(IngestError) as caught:
        dataset_name("a\x00b", "x.npz")
    assert caught.value.field == "name" and "U+0000" in caught.value.message
    assert dataset_name("  👩‍💻 faces  ", "x.npz") == "👩‍💻 faces"


def test_part_file_names_are_read_as_rfc_5987_and_html_send_them() -> None:
    from api.multipart import part_filename

    def name(disposition: bytes) -> str | None:
        from python_multipart.multipart import parse_options_header

        return part_filename(disposition, parse_options_header(disposition)[1])

    assert name(b"form-data; name=\"file\"; filename*=utf-8''d%C3%B6gn.npz") == "dögn.npz"
    assert name(b"form-data; name=\"file\"; filename*=UTF-8'de'd%C3%B6gn.npz") == "dögn.npz"
    assert name(b"form-data; name=\"file\"; filename*=iso-8859-1''d%F6gn.npz") == "dögn.npz"
    assert name(b'form-data; name="file"; filename="a.npz"; filename*=utf-8\'\'%C3%A9.npz') == "é.npz"
    assert name('form-data; name="file"; filename="👩‍💻-faces.npz"'.encode()) == "👩‍💻-faces.npz"
    assert name(b'form-data; name="file"; filename="say %22hi%22.npz"') == 'say "hi".npz'
    assert name(b'form-data; name="file"') is None


# --------------------------------------------------------------------------- over HTTP: a real API on both backends


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An API (no worker) whose compression-ratio cap lets deflate's worst (about 1030) through, to stream it."""
    data_dir = tmp_path_factory.mktemp(f"ganforge-ingest-{request.param}")
    with api_only(request.param, data_dir, GANFORGE_MAX_COMPRESSION_RATIO="2000") as deployment:
        yield deployment


def post_raw(service: Service, disposition: str, data: bytes, **fields: str) -> httpx.Response:
    """A multipart body written by hand, so the file part's Content-Disposition is exactly `disposition`."""
    boundary = "ganforge-ingest"
    body = b""
    for key, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
    body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data
    body += f"\r\n--{boundary}--\r\n".encode()
    with service.client() as client:
        return client.post(
            "/v1/datasets", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )


def stored_x(service: Service, dataset: dict[str, Any]) -> np.ndarray:
    """The canonical x the API stored, read with the one reader."""
    artifacts = ArtifactStore(str(service.data_dir / "artifacts"))
    info = DatasetInfo.model_validate(dataset["info"])
    return read_canonical(artifacts, f"datasets/{dataset['id']}", info)[0]


def test_a_part_with_only_an_rfc_5987_file_name_is_accepted(api: Service) -> None:
    data = npz_bytes(x=np.random.default_rng(3).normal(size=(20, 2)))
    response = post_raw(api, "form-data; name=\"file\"; filename*=utf-8''d%C3%B6gn.npz", data)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "dögn"


def test_a_non_ascii_file_name_without_a_name_field_names_the_dataset(api: Service) -> None:
    data = npz_bytes(x=np.random.default_rng(4).normal(size=(20, 2)))
    with api.client() as client:
        response = client.post("/v1/datasets", files={"file": ("👩‍💻-faces.npz", data)})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "👩‍💻-faces"
    renamed = post_raw(api, 'form-data; name="file"; filename="tab\there.npz"', npz_bytes(x=np.ones((3, 2))))
    assert renamed.status_code == 201 and renamed.json()["name"] == "tabhere"


def test_a_zip_of_16_bit_pngs_is_stored_by_its_range(api: Service) -> None:
    values = np.tile(np.round(np.linspace(0, 65535, 32)).astype(np.uint16), (32, 1))
    data = zip_bytes({f"scans/{i}.png": picture_bytes(Image.fromarray(values)) for i in range(3)})
    with api.client() as client:
        response = client.post("/v1/datasets", files={"file": ("scans.zip", data)})
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (dataset["info"]["source_dtype"], dataset["info"]["source_range"]) == ("I;16", [0.0, 65535.0])
    x = stored_x(api, dataset)
    assert (x.min(), x.max()) == (-1.0, 1.0) and abs(float(x.mean())) < 1e-3


def test_blank_or_bombed_uploads_are_refused_with_the_field(api: Service) -> None:
    bzip_bomb = zip_bytes({"x.npy": b"\0" * 50_000_000}, zipfile.ZIP_BZIP2)
    assert len(bzip_bomb) < 100_000 and 50e6 / len(bzip_bomb) > 2000 and bz2  # bzip2 packs zeros past any deflate
    cases = [
        ("narrow.npz", npz_bytes(x=np.arange(0, 256, dtype=np.uint16).reshape(4, 8, 8)), 422, "file.x", "blank"),
        ("bomb.npz", bzip_bomb, 413, "file.x", "compression ratio"),
    ]
    with api.client() as client:
        for filename, data, status, field, fragment in cases:
            response = client.post("/v1/datasets", files={"file": (filename, data)})
            assert response.status_code == status, response.text
            details = response.json()["error"]["details"]
            assert details[0]["field"] == field and fragment in details[0]["message"], details
        stated = client.post("/v1/datasets", files={"file": cases[0][:2]}, data={"value_range": "0,255"})
        assert stated.status_code == 201, stated.text
        assert stated.json()["info"]["source_range"] == [0.0, 255.0]
        assert (stored_x(api, stated.json()).min(), stored_x(api, stated.json()).max()) == (-1.0, 1.0)


def _rss_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _fortran_x() -> bytes:
    return npz_bytes(True, x=np.zeros((780_000, 64), np.float64, order="F"))  # 0.39 MB → 400 MB


def _long_y() -> bytes:
    return npz_bytes(True, x=np.zeros((25_000_000, 1), np.uint8), y=np.zeros(25_000_000, np.int64))


@pytest.mark.slow
@pytest.mark.parametrize("api", ["embedded"], indirect=True)  # the API's memory does not depend on the store
@pytest.mark.parametrize("make", [_fortran_x, _long_y], ids=["fortran-x", "long-y"])
def test_a_hostile_npz_is_normalised_outside_the_api_in_bounded_memory(api: Service, make: Callable[[], bytes]) -> None:
    """Fault 13: the API's RSS grows < 100 MB and /healthz answers within 1 s while the upload is normalised."""
    data = make()
    assert api.api is not None
    pid = api.api.pid
    before = _rss_kb(pid)
    result: dict[str, Any] = {}

    def send() -> None:
        with api.client() as client:
            client.timeout = httpx.Timeout(300)
            result["response"] = client.post("/v1/datasets", files={"file": ("hostile.npz", data)})

    sender = threading.Thread(target=send)
    started = time.monotonic()
    sender.start()
    peak, child_peak, health, while_child = before, 0, [], 0
    with httpx.Client(base_url=api.url, timeout=5) as probe:
        while sender.is_alive():
            peak = max(peak, _rss_kb(pid))
            children = _children(pid)
            for child in children:
                try:
                    child_peak = max(child_peak, _rss_kb(child, "VmHWM"))
                except (OSError, AssertionError):
                    pass
            tick = time.monotonic()
            assert probe.get("/healthz").status_code == 200
            health.append(time.monotonic() - tick)
            while_child += bool(children)
            time.sleep(0.1)
    sender.join()
    seconds = time.monotonic() - started
    response = result["response"]
    print(
        f"\n{make.__name__}: {len(data) / 1e6:.2f} MB upload, {seconds:.1f} s; API VmRSS {before / 1024:.0f} MB → "
        f"peak {peak / 1024:.0f} MB (+{(peak - before) / 1024:.1f} MB); ingest subprocess peak RSS "
        f"{child_peak / 1024:.0f} MB; /healthz max {max(health) * 1000:.0f} ms over {len(health)} probes "
        f"({while_child} while the subprocess ran); answer {response.status_code}"
    )
    assert response.status_code == 201, response.text
    assert (peak - before) / 1024 < 100
    assert while_child >= 3 and max(health) < 1.0
    assert 0 < child_peak / 1024 < 400  # streamed: far below the 400 MB the array unpacks to
