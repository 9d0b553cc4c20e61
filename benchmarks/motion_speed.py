"""Seconds a job's loop and interpolation cost after the model (renderer.motion, on the writer thread), per mode.

Frames are synthetic (a textured pattern moving a few pixels a frame) at SVD-XT's size: minterpolate's cost depends
on the size and the number of frames it makes, hardly on the content. Prints one line per mode: the median of
--runs runs, and seconds per output frame.

    python benchmarks/motion_speed.py [--frames 25] [--size 1024x576] [--output-fps 24] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from renderer.motion import INTERPOLATORS, Motion  # noqa: E402


def frames(count: int, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([np.stack([(x + 8 * i) % 256, (y + 4 * i) % 256, ((x + y) // 2 + 6 * i) % 256], -1)
                     for i in range(count)]).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--size", default="1024x576")
    parser.add_argument("--fps", type=int, default=7)
    parser.add_argument("--output-fps", type=int, default=24)
    parser.add_argument("--loop", default="pingpong")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    clip = frames(args.frames, width, height)
    print(f"{args.frames} frames {width}x{height}, loop {args.loop}, {args.fps} -> {args.output_fps} fps, "
          f"{os.cpu_count()} CPU cores")
    for name in INTERPOLATORS:
        motion = Motion(loop=args.loop, crossfade_frames=4, interpolation=name, fps=args.fps,
                        output_fps=args.output_fps if name != "none" else args.fps)
        seconds = []
        for _ in range(args.runs):
            start = time.perf_counter()
            made = motion.apply(clip)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        print(f"{name:10s} {len(made):4d} frames  {median:7.2f} s  ({median / len(made) * 1000:.1f} ms a frame)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
