"""The output formats: one table that the writers, the plan, the contact sheet, the API, doctor and the JSON schemas
all read (tests/test_registries.py checks that the schemas' enums agree with it).

Adding a format is one `OutputFormat` row here plus its entry in the schemas' enums.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Encoder:
    """How ffmpeg writes a format: codec, output pixel format and extra output arguments."""

    codec: str
    pix_fmt: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class OutputFormat:
    name: str  # as written in recipes and sidecars
    description: str
    extension: str | None = None  # the file's suffix; None for a folder of PNG frames
    mime: str | None = None
    shown_as: str = "img"  # how the contact sheet shows it: "video" (<video> source) or "img"
    encoder: Encoder | None = None  # None: not encoded by ffmpeg (frames)

    @property
    def is_file(self) -> bool:
        return self.extension is not None


# Formats are forced with -f because temporary names have no meaningful extension. The order is the order of
# preference when one file must stand for a job (API's `video`, the contact sheet): browsers play H.264 mp4
# everywhere (Chrome, Edge, Safari, Firefox); VP9 webm is the fallback <source>; animated webp keeps full colour
# where gif has 256.
FORMATS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("mp4", "H.264, yuv420p, plays in browsers", "mp4", "video/mp4", "video",
                 Encoder("libx264", "yuv420p", ("-crf", "18", "-preset", "medium", "-movflags", "+faststart",
                                                "-f", "mp4"))),
    OutputFormat("webm", "VP9", "webm", "video/webm", "video",
                 Encoder("libvpx-vp9", "yuv420p", ("-crf", "32", "-b:v", "0", "-row-mt", "1", "-f", "webm"))),
    OutputFormat("webp", "animated", "webp", "image/webp", "img",
                 Encoder("libwebp_anim", "yuv420p", ("-quality", "90", "-loop", "0", "-f", "webp"))),
    OutputFormat("gif", "animated", "gif", "image/gif", "img",
                 Encoder("gif", "pal8", ("-vf", "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse="
                                         "dither=bayer", "-loop", "0", "-f", "gif"))),
    OutputFormat("frames", "a folder of PNGs"),
)}
DEFAULT_FORMATS = ("mp4",)
FILE_FORMATS = tuple(name for name, f in FORMATS.items() if f.is_file)
