"""Running the ffmpeg that imageio-ffmpeg ships: fed raw frames in one write, never outliving svdrender, and its
failure said in one line. The writers (encoding) and motion (interpolation) both run it through `run`.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np

from .errors import JobError


def executable() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run(args: list[str], frames: np.ndarray, *, what: str, stdout=subprocess.DEVNULL) -> None:
    """Run ffmpeg with `args`, writing uint8 `frames` to its stdin; raise JobError("<what> failed: ffmpeg: <reason>")
    when it exits with an error. `stdout` is where its output goes (a file, never a pipe: nothing drains it)."""
    # ffmpeg's messages go to a file, not a pipe: with nothing to drain, the frames go to its stdin in one blocking
    # write that releases the GIL throughout. communicate() would write them 4 KiB at a time from Python, taking
    # the GIL for every piece while the main thread drives the GPU (4x slower than one write on a 2-core machine).
    # A session of its own: a Ctrl-C meant for svdrender must not kill ffmpeg before svdrender decides what to do.
    # But it must not outlive svdrender either (a second signal exits at once): the kernel kills it when we die.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([executable(), *args], stdin=subprocess.PIPE, stdout=stdout, stderr=err,
                                start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
        with _children_lock:
            _children.add(proc)
        try:
            try:
                proc.stdin.write(memoryview(np.ascontiguousarray(frames, dtype=np.uint8)).cast("B"))
            except BrokenPipeError:
                pass  # ffmpeg stopped reading: its exit status and messages below say why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            proc.wait()
            if proc.returncode != 0:
                err.seek(0)
                raise JobError(f"{what} failed: ffmpeg: {_reason(err.read(), proc.returncode)}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            with _children_lock:
                _children.discard(proc)


# ffmpeg processes running now, so that a second signal can kill them before svdrender exits at once.
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()
_PR_SET_PDEATHSIG = 1


def kill_children() -> None:
    """Kill every ffmpeg this process started and has not reaped (async-signal tolerant: no waiting, no locks)."""
    for proc in list(_children):
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except OSError:
            pass


def _die_with_parent(parent: int):
    """A preexec_fn asking Linux to SIGKILL the child when the thread that started it dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arm


def _reason(stderr: bytes, code: int) -> str:
    """ffmpeg's first error line (the cause; later lines are consequences), without its context addresses."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        return f"exited with status {code}"
    return re.sub(r"\[(\w+) @ 0x[0-9a-f]+\] ", r"\1: ", lines[0])
