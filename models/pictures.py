"""Pictures of data (numpy + Pillow, no torch): image grids and 2-D scatter plots as PNG bytes.

The worker draws sample snapshots with them, the API data set previews. Every picture says what it shows: a
scatter plot has axes with tick labels, a title (the step) and a legend that tells generated from real points by
marker shape and colour; a grid has a title strip and, for labelled images, each tile's class name under it.
Text is Pillow's built-in font (no matplotlib: the API and the worker stay light).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SCATTER_SIZE = 512
BACKGROUND_POINTS = 2500
GENERATED: tuple[int, int, int] = (31, 119, 180)  # blue filled dots
REAL: tuple[int, int, int] = (170, 170, 170)  # grey crosses
INK = (40, 40, 40)
GRID_LINE = (232, 232, 232)
# The plot area inside the SCATTER_SIZE square: room for the title above, tick labels left and below.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 14, 30, 34
TITLE_FONT_SIZE = 14
LABEL_FONT_SIZE = 11
CAPTION_FONT_SIZE = 10
Colour = tuple[int, int, int]
Marker = Callable[["ImageDraw.ImageDraw", float, float, Colour, float], None]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> float:
    left, _top, right, _bottom = font.getbbox(text)
    return float(right - left)


def _fit(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, width: float) -> str:
    """`text`, cut with an ellipsis to fit `width` px."""
    if _text_width(font, text) <= width:
        return text
    while text and _text_width(font, text + "…") > width:
        text = text[:-1]
    return text + "…" if text else ""


def image_grid(
    images: np.ndarray,
    min_cell: int = 32,
    pad: int = 2,
    *,
    title: str | None = None,
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] = (),
) -> bytes:
    """PNG of N×C×H×W images in [-1, 1], in a near-square grid; small images are enlarged.

    `title` (e.g. "step 500") goes in a strip above the grid; with `labels` (one class index per image) each
    tile gets its class name (`class_names[label]`, else the index) in a strip under it.
    """
    n, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    scale = max(1, math.ceil(min_cell / max(height, width)))
    pixels = ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=1)
    cell_h, cell_w = height * scale, width * scale
    captioned = labels is not None and len(labels) == n
    caption_h = CAPTION_FONT_SIZE + 3 if captioned else 0
    title_h = TITLE_FONT_SIZE + 8 if title else 0
    row_h = cell_h + caption_h + pad
    grid_w = columns * (cell_w + pad) + pad
    if title:  # a grid narrower than its title is widened (white on the right) rather than the title cut
        grid_w = max(grid_w, math.ceil(_text_width(_font(TITLE_FONT_SIZE), title)) + pad + 6)
    canvas = np.full((title_h + rows * row_h + pad, grid_w, 3), 255, np.uint8)
    for i in range(n):
        tile = pixels[i, :3].transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
        top, left = title_h + pad + (i // columns) * row_h, pad + (i % columns) * (cell_w + pad)
        canvas[top : top + cell_h, left : left + cell_w] = tile
    image = Image.fromarray(canvas)
    if title or captioned:
        draw = ImageDraw.Draw(image)
        if title:
            font = _font(TITLE_FONT_SIZE)
            draw.text((pad + 2, 3), _fit(font, title, grid_w - 6), fill=INK, font=font)
        if captioned and labels is not None:
            font = _font(CAPTION_FONT_SIZE)
            for i, label in enumerate(labels):
                name = class_names[label] if 0 <= label < len(class_names) else str(label)
                top, left = title_h + pad + (i // columns) * row_h + cell_h, pad + (i % columns) * (cell_w + pad)
                draw.text((left + 1, top + 1), _fit(font, name, cell_w - 2), fill=INK, font=font)
    return png(image)


def _plane(rows: np.ndarray) -> np.ndarray:
    """The first two dimensions of N×D rows (a zero second axis for 1-D rows), finite rows only."""
    rows = rows.reshape(len(rows), -1)
    points = rows[:, :2] if rows.shape[1] >= 2 else np.stack([rows[:, 0], np.zeros(len(rows))], axis=1)
    finite: np.ndarray = points[np.isfinite(points).all(axis=1)]
    return finite


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 × 10^k apart) within [low, high]."""
    span = high - low
    if not math.isfinite(span) or span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _tick_label(value: float, step: float) -> str:
    if abs(value) < step * 1e-6:
        value = 0.0
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    text = f"{value:.{decimals}f}" if decimals <= 4 else f"{value:.2g}"
    return text if len(text) <= 8 else f"{value:.2g}"


def _cross(draw: ImageDraw.ImageDraw, x: float, y: float, colour: Colour, arm: float = 2.5) -> None:
    draw.line((x - arm, y, x + arm, y), fill=colour, width=1)
    draw.line((x, y - arm, x, y + arm), fill=colour, width=1)


def _dot(draw: ImageDraw.ImageDraw, x: float, y: float, colour: Colour, radius: float = 1.8) -> None:
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)


def scatter(points: np.ndarray, background: np.ndarray | None = None, *, title: str | None = None) -> bytes:
    """PNG (SCATTER_SIZE px square) of points (blue dots) over `background` points (grey crosses, e.g. the real
    data) on the same axes, with tick labels, `title` above (e.g. "step 500") and a legend naming both kinds.

    Without `background` the points are drawn as the data (a data set's preview: grey crosses, legend "data").
    """
    front = _plane(points)
    back = _plane(background[:BACKGROUND_POINTS]) if background is not None else front[:0]
    preview = background is None
    both = np.concatenate([back, front])
    if len(both) == 0:
        both = np.zeros((1, 2))
    # Robust bounds for the generated points (outliers), exact bounds for the background.
    low, high = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    if len(back):
        low, high = np.minimum(low, back.min(axis=0)), np.maximum(high, back.max(axis=0))
    span = max(float((high - low).max()), 1e-6) * 1.1
    centre = (low + high) / 2
    lo = centre - span / 2  # one scale on both axes: a circle stays a circle
    left, top = MARGIN_LEFT, MARGIN_TOP
    right, bottom = SCATTER_SIZE - MARGIN_RIGHT, SCATTER_SIZE - MARGIN_BOTTOM
    side = min(right - left, bottom - top)
    right, bottom = left + side, top + side

    def to_px(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unit = (xy - lo) / span
        return left + unit[:, 0] * side, bottom - unit[:, 1] * side

    image = Image.new("RGB", (SCATTER_SIZE, SCATTER_SIZE), "white")
    draw = ImageDraw.Draw(image)
    label_font, title_font = _font(LABEL_FONT_SIZE), _font(TITLE_FONT_SIZE)
    for axis in (0, 1):
        ticks = nice_ticks(float(lo[axis]), float(lo[axis] + span))
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        for value in ticks:
            offset = (value - lo[axis]) / span * side
            text = _tick_label(value, step)
            width = _text_width(label_font, text)
            if axis == 0:
                x = left + offset
                draw.line((x, top, x, bottom), fill=GRID_LINE)
                draw.line((x, bottom, x, bottom + 4), fill=INK)
                draw.text((x - width / 2, bottom + 6), text, fill=INK, font=label_font)
            else:
                y = bottom - offset
                draw.line((left, y, right, y), fill=GRID_LINE)
                draw.line((left - 4, y, left, y), fill=INK)
                draw.text((left - 7 - width, y - LABEL_FONT_SIZE / 2 - 1), text, fill=INK, font=label_font)
    layers: list[tuple[np.ndarray, Colour, Marker]] = (
        [(front, REAL, _cross)] if preview else [(back, REAL, _cross), (front, GENERATED, _dot)]
    )
    for layer, colour, marker in layers:
        xs, ys = to_px(layer)
        inside = (xs >= left) & (xs <= right) & (ys >= top) & (ys <= bottom)
        for px, py in zip(xs[inside], ys[inside], strict=True):
            marker(draw, float(px), float(py), colour, 2.5 if marker is _cross else 1.8)
    draw.rectangle((left, top, right, bottom), outline=INK)
    if title:
        draw.text((left, 6), _fit(title_font, title, SCATTER_SIZE - left - 8), fill=INK, font=title_font)
    entries: list[tuple[str, Colour, Marker]] = (
        [("data", REAL, _cross)] if preview else [("generated", GENERATED, _dot), ("real data", REAL, _cross)]
    )
    _legend(draw, entries, right, top, label_font)
    return png(image)


def _legend(
    draw: ImageDraw.ImageDraw,
    entries: list[tuple[str, Colour, Marker]],
    right: float,
    top: float,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    """A boxed legend in the plot's top-right corner: per entry a large marker and its name."""
    line_h = LABEL_FONT_SIZE + 6
    width = 30 + max(_text_width(font, name) for name, _, _ in entries)
    box = (right - width - 8, top + 8, right - 8, top + 8 + line_h * len(entries) + 6)
    draw.rectangle(box, fill="white", outline=INK)
    for i, (name, colour, marker) in enumerate(entries):
        y = box[1] + 4 + i * line_h + line_h / 2
        x = box[0] + 12
        marker(draw, x, y, colour, 4 if marker is _cross else 3.5)  # the legend's markers, larger
        draw.text((x + 12, y - LABEL_FONT_SIZE / 2 - 1), name, fill=INK, font=font)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
