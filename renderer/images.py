"""Safe loading of input images (PNG, JPEG, WEBP) and fitting them to a render's width×height."""

from __future__ import annotations

import hashlib
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from renderer.errors import ImageError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
FIT_MODES = ("crop", "pad", "stretch")
MAX_PIXELS = 64_000_000
MAX_BYTES = 64 * 1024 * 1024

# Only used to name a refused file's format in the message; Pillow never parses these formats for us.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
)
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_PAD_COLOUR = (0, 0, 0)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load a PNG, JPEG or WEBP file as a fully decoded, upright RGB image.

    The format is decided by the file's content, never its extension. Images over MAX_PIXELS are refused
    from their header, before any pixel is decoded. EXIF orientation is applied. Transparent pixels are
    composited on white (what product shots on a transparent background are expected to look like);
    16-bit greys are scaled to 8 bits (65535 → 255), not clipped; palette, grey and CMYK become RGB.
    Every problem raises ImageError with a one-line message that starts with the file's path.
    """
    name = os.fspath(path)
    _check_file(name)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own two limits; a warning must refuse the file, not print.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(name, formats=ALLOWED_FORMATS) as img:
                _check_pixels(name, img.size)
                return _decode(name, img)
    except UnidentifiedImageError as exc:
        raise ImageError(_unidentified_message(name)) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image is too large; {_pixel_limit()}") from exc
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read: {exc.strerror or exc}") from exc


def check_image(path: str | os.PathLike) -> None:
    """Decode an image fully and discard it, raising ImageError for anything load_image would refuse."""
    load_image(path).close()


def image_sha256(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of an image file's bytes."""
    name = os.fspath(path)
    _check_file(name)
    digest = hashlib.sha256()
    try:
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def fit_image(img: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """Fit an image to exactly width×height RGB: "crop" covers then centre-crops, "pad" fits inside a black
    canvas, "stretch" ignores the aspect ratio. Resampling is Lanczos."""
    if mode not in FIT_MODES:
        raise ValueError(f"fit mode must be one of {', '.join(FIT_MODES)}, not {mode!r}")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, not {width}x{height}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    size = (width, height)
    if mode == "crop":
        # ImageOps.fit crops in source coordinates and resizes once, so no detail is lost to a second pass.
        return ImageOps.fit(img, size, method=Image.Resampling.LANCZOS)
    if mode == "pad":
        # Not ImageOps.pad: it can round a side to 0 pixels for extreme aspect ratios and then fails.
        scale = min(width / img.width, height / img.height)
        inner = (max(1, min(width, round(img.width * scale))), max(1, min(height, round(img.height * scale))))
        canvas = Image.new("RGB", size, _PAD_COLOUR)
        canvas.paste(img.resize(inner, Image.Resampling.LANCZOS),
                     ((width - inner[0]) // 2, (height - inner[1]) // 2))
        return canvas
    return img.resize(size, Image.Resampling.LANCZOS)


def _pixel_limit() -> str:
    """Say the pixel cap and what to do about it."""
    return f"svdrender accepts at most {MAX_PIXELS // 1_000_000} megapixels (downscale it first)"


def _check_file(name: str) -> None:
    """Refuse a path that is missing, not a regular file, or over MAX_BYTES."""
    try:
        info = os.stat(name)
    except FileNotFoundError:
        raise ImageError(f"{name}: image file not found") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{name}: is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"{name}: is not a regular file")
    if info.st_size > MAX_BYTES:
        raise ImageError(
            f"{name}: file is {info.st_size} bytes; svdrender accepts image files up to {MAX_BYTES // 2**20} MiB"
        )


def _check_pixels(name: str, size: tuple[int, int]) -> None:
    """Refuse an image whose header claims more than MAX_PIXELS, before its pixels are decoded."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{name}: image is {width}x{height} pixels; {_pixel_limit()}")


def _decode(name: str, img: Image.Image) -> Image.Image:
    """Decode all pixels of an opened image and return it upright in RGB."""
    try:
        img.load()
        upright = ImageOps.exif_transpose(img)
        return _to_rgb(upright)
    except Exception as exc:
        # Pillow's decoders report malformed data as OSError, SyntaxError, ValueError, struct.error,
        # zlib.error and more; each is the same user problem: the file is damaged.
        raise ImageError(f"{name}: cannot be decoded: {exc}") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to RGB: 16-bit scaled, transparency over white."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        # PNG's 16-bit greys; v/257 rounded maps 0..65535 onto 0..255 exactly (32768 → 128).
        values = np.clip(np.asarray(img, dtype=np.uint32), 0, 65535)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if img.has_transparency_data:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def _unidentified_message(name: str) -> str:
    """Say what a file Pillow could not open as PNG, JPEG or WEBP actually is."""
    try:
        with open(name, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"{name}: cannot be read: {exc.strerror or exc}"
    found = next((fmt for magic, fmt in _SIGNATURES if head.startswith(magic)), None)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        found = "WEBP"
    elif head[4:8] == b"ftyp":
        found = _HEIF_BRANDS.get(head[8:12])
    if found in ALLOWED_FORMATS:
        return f"{name}: cannot be decoded: corrupt {found} header"
    if found:
        return f"{name}: is a {found} file; svdrender accepts PNG, JPEG or WEBP"
    return f"{name}: cannot be decoded: not a PNG, JPEG or WEBP image"
