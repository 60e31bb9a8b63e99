"""Per-frame pixel work of the sharder: decode, square hand crop, mirror, JPEG encode."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from pipeline.errors import SkipError
from pipeline.geometry import crop_transform
from pipeline.sources.files import IMAGE, read_bytes

MAX_IMAGE_PIXELS = 50_000_000  # 8K UHD is 33 MP; a forged 30000x30000 header would ask for 2.7 GB
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_SIGNATURE


def decode_image(data: bytes, where: str, scale: int = 1, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 pixels of a JPEG (simplejpeg, libjpeg-turbo) or a PNG (cv2), never before the header's
    size is checked against MAX_IMAGE_PIXELS.

    `scale` (1, 2, 4 or 8) asks libjpeg-turbo to decode a JPEG directly at 1/scale size in the DCT domain:
    cheaper than a full decode and an anti-aliased downscale at the same time. PNG ignores it.
    `size` is the (height, width) already read (and checked) from the header, if any.
    """
    h, w = size or image_size(data, where)
    if is_jpeg(data):
        try:
            if scale == 1:
                return simplejpeg.decode_jpeg(data, colorspace="RGB")
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-h // scale),
                                          min_width=-(-w // scale))
        except ValueError as exc:
            raise SkipError("image_undecodable", f"{where}: corrupt or truncated JPEG ({exc})") from exc
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise SkipError("image_undecodable", f"{where}: corrupt or truncated PNG ({exc.msg})") from exc
    if img is None:
        raise SkipError("image_undecodable", f"{where}: corrupt or truncated PNG")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _header_size(data: bytes, where: str) -> tuple[int, int]:
    if is_jpeg(data):
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise SkipError("image_undecodable", f"{where}: corrupt or truncated JPEG (header: {exc})") from exc
        return h, w
    if is_png(data) and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return h, w
    raise SkipError("image_undecodable", f"{where}: not a JPEG or PNG image (corrupt, truncated or another format)")


def image_size(data: bytes, where: str) -> tuple[int, int]:
    """(height, width) from the JPEG or PNG header without decoding pixels; refuses a size no decode
    should allocate (more than MAX_IMAGE_PIXELS) and an empty one."""
    h, w = _header_size(data, where)
    if h * w > MAX_IMAGE_PIXELS:
        raise SkipError("image_too_large", f"{where}: header claims {w}x{h} pixels, more than the "
                                           f"{MAX_IMAGE_PIXELS} allowed")
    if h * w == 0:
        raise SkipError("image_undecodable", f"{where}: header claims an empty {w}x{h} image")
    return h, w


def decode_scale(crop_side: float, size: int) -> int:
    """Largest power-of-two DCT downscale that keeps the crop at least `size` pixels wide."""
    scale = 1
    while scale < 8 and crop_side / (2 * scale) >= size:
        scale *= 2
    return scale


def scale_transform(factor: float) -> np.ndarray:
    """3x3 map from full-resolution pixels to a 1/factor decode (pixel centres: (u + 0.5) / f - 0.5)."""
    return np.array([[1 / factor, 0.0, 0.5 / factor - 0.5], [0.0, 1 / factor, 0.5 / factor - 0.5], [0, 0, 1.0]])


def read_file(path: str) -> bytes:
    """The bytes of a frame's image file, through the guarded path (regular file, bounded size)."""
    return read_bytes(path, IMAGE)


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=quality, colorspace="RGB")


@dataclass
class Crop:
    pixels: np.ndarray  # size x size x 3 uint8
    transform: np.ndarray  # 3x3 source pixels -> stored pixels
    crop_box: list[float]  # square region in source pixels
    fill: float  # fraction of the crop that lies outside the source image


def square_crop_region(box: tuple[float, float, float, float], context: float) -> tuple[int, int, int]:
    """Integer square (x0, y0, side) centred on the box, side = context x the box's longer side.

    Integer alignment lets the crop be a slice plus one area resize: exact, and no resampling twice.
    """
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    side = max(1, math.ceil(context * max(box[2] - box[0], box[3] - box[1])))
    return math.floor(cx - side / 2.0), math.floor(cy - side / 2.0), side


def crop_hand(img: np.ndarray, box, context: float, size: int, fill_value: int) -> Crop:
    """Square crop around the hand box resized to size x size; out-of-image parts take `fill_value`."""
    h, w = img.shape[:2]
    x0, y0, side = square_crop_region(box, context)
    x1, y1 = x0 + side, y0 + side
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    inside = max(0, sx1 - sx0) * max(0, sy1 - sy0)
    region = img[sy0:max(sy0, sy1), sx0:max(sx0, sx1)]
    if inside < side * side:
        region = cv2.copyMakeBorder(region, sy0 - y0, y1 - max(sy0, sy1), sx0 - x0, x1 - max(sx0, sx1),
                                    cv2.BORDER_CONSTANT, value=(fill_value,) * 3)
    # Area averaging only where linear interpolation would alias (JPEG crops arrive pre-scaled below 2x).
    interp = cv2.INTER_AREA if side >= 2 * size else cv2.INTER_LINEAR
    pixels = cv2.resize(region, (size, size), interpolation=interp) if side != size else region
    return Crop(pixels, crop_transform(x0, y0, side, size), [float(x0), float(y0), float(x1), float(y1)],
                1.0 - inside / float(side * side))
