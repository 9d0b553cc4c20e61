"""Loops and output frame rates: what happens to a job's frames after the model made them and before the writers
encode them.

Order: loop (`pingpong`, `crossfade`), then interpolation to `output_fps`, then every output format writes the
result (so the `frames` format holds the frames the videos show). `fps` stays SVD's conditioning and the rate the
model's frames are meant to play at. Pure numpy and the ffmpeg that imageio-ffmpeg ships; no torch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np

from . import ffmpeg
from .errors import JobError

# The recipe settings this module reads (schemas/recipe.schema.json `$defs/settings`).
SETTING_NAMES = ("loop", "crossfade_frames", "interpolation", "output_fps")

LOOPS = {
    "none": "the frames as the model made them",
    "pingpong": "frames 0..n-1 then n-2..1 (2n - 2 frames): forward, then backward without repeating either end",
    "crossfade": "the last crossfade_frames frames blend into the first ones (n - crossfade_frames frames)",
}

# A job's frames after loop and interpolation are held in memory and written by every format: at most this many
# (1.8 GB of frames at SVD's 1024x576; 25 frames ping-ponged to 60 fps make 411).
MAX_OUTPUT_FRAMES = 1024

# minterpolate estimates motion from the two frames on either side of a gap: this many frames of context are fed
# before the clip and after it, and the output is cut back to the clip.
_CONTEXT = 2


@dataclass(frozen=True)
class Interpolator:
    """One `interpolation` setting: how frames are made in between to reach `output_fps`."""

    name: str
    description: str
    minterpolate_mode: str | None  # ffmpeg minterpolate's mi_mode; None: no frames are made

    def filter(self, fps: int, output_fps: int) -> str | None:
        """The ffmpeg filter graph it runs from `fps` to `output_fps` (None when it runs nothing)."""
        if self.minterpolate_mode is None or output_fps == fps:
            return None
        # The clip starts at 0 once the context before it is shifted to negative times; trim drops that context.
        return (f"setpts=PTS-{_CONTEXT}/(FRAME_RATE*TB),minterpolate=fps={output_fps}:mi_mode="
                f"{self.minterpolate_mode}:scd=none,trim=start=0")

    def __call__(self, frames: np.ndarray, fps: int, output_fps: int, cyclic: bool) -> np.ndarray:
        """`frames` at `fps` as round(n * output_fps / fps) frames at `output_fps` (the same duration); `cyclic`
        clips (loops) are interpolated across the seam from their last frame back to their first."""
        graph = self.filter(fps, output_fps)
        if graph is None:
            return frames
        n, height, width = frames.shape[:3]
        around = np.arange(-_CONTEXT, n + _CONTEXT)
        padded = frames[around % n if cyclic else np.clip(around, 0, n - 1)]
        args = ["-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
                "-i", "-", "-vf", graph, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        wanted = interpolated_count(n, fps, output_fps)
        # Into an anonymous file, not a pipe: ffmpeg's output would fill a pipe nobody drains while its input is
        # written in one blocking write.
        with tempfile.TemporaryFile() as out:
            ffmpeg.run(args, padded, what=f"interpolation '{self.name}' to {output_fps} fps", stdout=out)
            out.seek(0)
            made = np.fromfile(out, dtype=np.uint8)
        made = made[:made.size - made.size % (height * width * 3)].reshape(-1, height, width, 3)
        if len(made) < wanted:
            raise JobError(f"interpolation '{self.name}' to {output_fps} fps failed: ffmpeg made {len(made)} frames, "
                           f"{wanted} expected")
        return made[:wanted]


# The `interpolation` setting's values and what runs for each; a learned interpolator (RIFE, FILM) would be one more
# entry here, with a callable of the same signature.
INTERPOLATORS = {i.name: i for i in (
    Interpolator("none", "no new frames: output_fps only changes the playback rate (faster or slower)", None),
    Interpolator("duplicate", "repeats frames to reach output_fps (ffmpeg minterpolate, mi_mode=dup): cheapest, "
                              "as choppy as the source", "dup"),
    Interpolator("blend", "cross-fades neighbouring frames (minterpolate mi_mode=blend): fast, smooth, ghosts on "
                          "motion", "blend"),
    Interpolator("mci", "motion-compensated interpolation (minterpolate mi_mode=mci): the smoothest, slow, warps "
                        "on large or fast motion", "mci"),
)}


def interpolated_count(frames: int, fps: int, output_fps: int) -> int:
    """round(frames * output_fps / fps), halves up: the frame count that keeps the clip's duration."""
    return (2 * frames * output_fps + fps) // (2 * fps)


@dataclass(frozen=True)
class Motion:
    """A job's loop and output frame rate settings, resolved."""

    loop: str
    crossfade_frames: int
    interpolation: str
    fps: int  # SVD's conditioning, and the rate the model's frames play at
    output_fps: int  # the written files' frame rate

    @property
    def interpolates(self) -> bool:
        return self.interpolation != "none" and self.output_fps != self.fps

    @property
    def filter(self) -> str | None:
        """The ffmpeg filter graph of its interpolation, or None."""
        return INTERPOLATORS[self.interpolation].filter(self.fps, self.output_fps)

    def looped_count(self, frames: int) -> int:
        if self.loop == "pingpong":
            return max(2 * frames - 2, 1)
        if self.loop == "crossfade":
            return frames - self.crossfade_frames
        return frames

    def frame_count(self, frames: int) -> int:
        """How many frames the files get from `frames` model frames."""
        looped = self.looped_count(frames)
        return interpolated_count(looped, self.fps, self.output_fps) if self.interpolates else looped

    def cache_inputs(self) -> dict:
        """The settings that change the written bytes, and only those: with none of them, a job's cache key is
        what it was before these settings existed (and a crossfade length with no crossfade re-renders nothing)."""
        inputs: dict = {}
        if self.loop != "none":
            inputs["loop"] = self.loop
        if self.loop == "crossfade":
            inputs["crossfade_frames"] = self.crossfade_frames
        if self.output_fps != self.fps:
            inputs["output_fps"] = self.output_fps
        if self.interpolates:
            inputs["interpolation"] = self.interpolation
        return inputs

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames [F, H, W, 3] looped, then interpolated to output_fps: the frames every format writes."""
        frames = loop(frames, self.loop, self.crossfade_frames)
        if self.interpolates:
            frames = INTERPOLATORS[self.interpolation](frames, self.fps, self.output_fps, cyclic=self.loop != "none")
        return frames


def loop(frames: np.ndarray, mode: str, crossfade_frames: int) -> np.ndarray:
    """`frames` made to loop: see LOOPS."""
    if mode == "pingpong":
        return np.concatenate([frames, frames[-2:0:-1]])
    if mode == "crossfade":
        return crossfade(frames, crossfade_frames)
    return frames


def crossfade(frames: np.ndarray, k: int) -> np.ndarray:
    """The last k frames blended into the first k, then frames k..n-k-1: n - k frames whose end flows into their
    start. Blended frame i is tail frame n-k+i weighted (k-i)/(k+1) plus head frame i weighted (i+1)/(k+1), so
    the clip leaves its end (frame n-k-1 → mostly n-k) and reaches its head (mostly k-1 → k) without a jump."""
    n = len(frames)
    if not 1 <= k <= n // 2:
        raise JobError(f"crossfade of {k} frames needs at least {2 * k} frames, got {n}")
    weights = (np.arange(1, k + 1, dtype=np.float32) / (k + 1))[:, None, None, None]
    blended = (1 - weights) * frames[n - k:].astype(np.float32) + weights * frames[:k].astype(np.float32)
    return np.concatenate([np.rint(blended).astype(np.uint8), frames[k:n - k]])
