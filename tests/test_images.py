"""Tests for renderer.images: real files in tmp_path, real Pillow."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from renderer import images
from renderer.errors import ImageError
from renderer.images import check_image, fit_image, image_sha256, load_image

RECIPE_INPUTS = Path(__file__).resolve().parent.parent / "recipes" / "inputs"


def _error(path) -> str:
    """Return the message of the ImageError load_image raises for path."""
    with pytest.raises(ImageError) as info:
        load_image(path)
    return str(info.value)


def _pixels(img: Image.Image) -> list[tuple[int, ...]]:
    """Return an RGB image's pixels in reading order."""
    return [tuple(p) for p in np.asarray(img).reshape(-1, 3).tolist()]


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """Write a PNG whose IHDR claims width×height but whose pixel data is a few bytes (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    ("fmt", "name", "options"),
    [("PNG", "a.png", {}), ("JPEG", "a.jpg", {"quality": 95}), ("WEBP", "a.webp", {"lossless": True})],
)
def test_each_allowed_format_loads_as_rgb(tmp_path, fmt, name, options):
    path = tmp_path / name
    Image.new("RGB", (40, 30), (200, 100, 50)).save(path, fmt, **options)
    img = load_image(path)
    assert (img.mode, img.size) == ("RGB", (40, 30))
    assert np.abs(np.asarray(img, dtype=int) - (200, 100, 50)).max() <= 2


def test_format_comes_from_content_not_extension(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    Image.new("RGB", (8, 8), (0, 255, 0)).save(path, "PNG")
    assert load_image(path).getpixel((4, 4)) == (0, 255, 0)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_refused_by_content_even_when_named_png(tmp_path, fmt):
    path = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(path, fmt)
    assert _error(path) == f"{path}: is a {fmt} file; svdrender accepts PNG, JPEG or WEBP"


def test_text_renamed_png_cannot_be_decoded(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n")
    assert _error(path) == f"{path}: cannot be decoded: not a PNG, JPEG or WEBP image"


def test_png_with_corrupt_header_is_named(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert _error(path) == f"{path}: cannot be decoded: corrupt PNG header"


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "cut.png"), ("JPEG", "cut.jpg")])
def test_truncated_files_cannot_be_decoded(tmp_path, fmt, name):
    path = tmp_path / name
    Image.effect_noise((64, 64), 50).convert("RGB").save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # The reason after the colon is Pillow's own wording.
    assert _error(path).startswith(f"{path}: cannot be decoded: image file is truncated")


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    # 9000×9000 is over svdrender's cap but under Pillow's own; the pixel data is 16 bytes, so decoding it
    # would fail as truncated: this message proves the refusal happened before any decoding.
    path = _png_header_only(tmp_path / "bomb.png", 9000, 9000)
    assert _error(path) == (
        f"{path}: image is 9000x9000 pixels; svdrender accepts at most 64 megapixels (downscale it first)"
    )
    with pytest.raises(ImageError):
        check_image(path)


@pytest.mark.parametrize("side", [9500, 100_000])
def test_pillows_own_bomb_warning_and_error_become_image_errors(tmp_path, side):
    # 9500² passes Pillow's warning limit, 100000² its error limit; both are caught inside Image.open.
    path = _png_header_only(tmp_path / "bomb.png", side, side)
    assert _error(path) == f"{path}: image is too large; svdrender accepts at most 64 megapixels (downscale it first)"


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_BYTES", 1024 * 1024)
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x00" * (1024 * 1024 + 1))
    assert _error(path) == f"{path}: file is 1048577 bytes; svdrender accepts image files up to 1 MiB"


def test_missing_file(tmp_path):
    path = tmp_path / "absent.png"
    assert _error(path) == f"{path}: image file not found"
    with pytest.raises(ImageError, match="image file not found"):
        image_sha256(path)


def test_directory(tmp_path):
    assert _error(tmp_path) == f"{tmp_path}: is a directory, not an image file"


def test_exif_orientation_6_is_applied(tmp_path):
    # Stored 40 wide × 20 high, red left half, blue right half; orientation 6 means "rotate 90° clockwise
    # to display", which puts the red half on top of a 20 × 40 picture.
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif)
    img = load_image(path)
    assert img.size == (20, 40)
    top, bottom = np.asarray(img, dtype=int)[5, 10], np.asarray(img, dtype=int)[35, 10]
    assert np.abs(top - (255, 0, 0)).max() <= 8
    assert np.abs(bottom - (0, 0, 255)).max() <= 8


def test_rgba_is_composited_on_white(tmp_path):
    src = Image.new("RGBA", (3, 1))
    src.putdata([(255, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    path = tmp_path / "cutout.png"
    src.save(path)
    pixels = _pixels(load_image(path))
    assert pixels[:2] == [(255, 255, 255), (255, 0, 0)]
    assert all(abs(v - 127.5) <= 1 for v in pixels[2])


def test_la_is_composited_on_white(tmp_path):
    src = Image.new("LA", (2, 1))
    src.putdata([(0, 0), (60, 255)])
    path = tmp_path / "grey.png"
    src.save(path)
    assert _pixels(load_image(path)) == [(255, 255, 255), (60, 60, 60)]


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    src = Image.new("P", (2, 1))
    src.putpalette([0, 0, 0, 0, 128, 255] + [0] * 762)
    src.putdata([0, 1])
    path = tmp_path / "palette.png"
    src.save(path, transparency=0)
    assert _pixels(load_image(path)) == [(255, 255, 255), (0, 128, 255)]


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    src = Image.new("I;16", (4, 1))
    for x, value in enumerate([0, 257, 32768, 65535]):
        src.putpixel((x, 0), value)
    path = tmp_path / "deep.png"
    src.save(path)
    assert _pixels(load_image(path)) == [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_become_rgb(tmp_path, mode):
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8), (90, 90, 90)).convert(mode).save(path, "JPEG", quality=95)
    img = load_image(path)
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img, dtype=int) - 90).max() <= 3


def _three_bands(width: int = 200, height: int = 100) -> Image.Image:
    """Return a picture with a red left quarter, green middle half and blue right quarter."""
    img = Image.new("RGB", (width, height), (0, 255, 0))
    img.paste((255, 0, 0), (0, 0, width // 4, height))
    img.paste((0, 0, 255), (3 * width // 4, 0, width, height))
    return img


@pytest.mark.parametrize("mode", images.FIT_MODES)
@pytest.mark.parametrize(("width", "height"), [(64, 48), (333, 177), (1, 1), (1024, 576)])
def test_fit_gives_exact_size_in_rgb(mode, width, height):
    out = fit_image(_three_bands().convert("L"), width, height, mode)
    assert (out.mode, out.size) == ("RGB", (width, height))


def test_crop_keeps_the_centre():
    out = np.asarray(fit_image(_three_bands(), 100, 100, "crop"), dtype=int)
    assert np.abs(out - (0, 255, 0)).max() <= 2


def test_pad_centres_on_black():
    out = np.asarray(fit_image(_three_bands(), 100, 100, "pad"), dtype=int)
    # 200×100 fits as 100×50, centred: black rows 0–24 and 75–99.
    assert (out[:25] == 0).all() and (out[75:] == 0).all()
    assert np.abs(out[50, 10] - (255, 0, 0)).max() <= 2
    assert np.abs(out[50, 50] - (0, 255, 0)).max() <= 2
    assert np.abs(out[50, 90] - (0, 0, 255)).max() <= 2


def test_stretch_keeps_every_band():
    out = np.asarray(fit_image(_three_bands(), 100, 100, "stretch"), dtype=int)
    for x, colour in [(10, (255, 0, 0)), (50, (0, 255, 0)), (90, (0, 0, 255))]:
        assert np.abs(out[:, x] - colour).max() <= 2


def test_fit_refuses_unknown_mode():
    with pytest.raises(ValueError, match="fit mode must be one of crop, pad, stretch, not 'zoom'"):
        fit_image(_three_bands(), 10, 10, "zoom")


def test_image_sha256_is_of_the_file_bytes(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    assert image_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_example_inputs_load_and_are_small():
    files = sorted(p for p in RECIPE_INPUTS.rglob("*") if p.suffix in (".png", ".jpg", ".webp"))
    assert len(files) >= 5
    for path in files:
        check_image(path)
        assert path.stat().st_size < 120_000, path
