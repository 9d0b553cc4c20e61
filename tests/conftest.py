"""Shared fixtures: hermetic environment, recipe writing, and running the CLI in a subprocess or in this process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
INPUTS = RECIPES / "inputs"

# Hermetic: never touch the network or the user's caches.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# One torch thread, here and in every CLI subprocess (they inherit it): on tiny tensors several threads spend more
# time synchronising than computing (5-10x slower on a busy 2-core machine), and torch's CPU kernels round differently
# with different thread counts, so frames rendered in this process and in a subprocess can be compared by hash. Set
# before anything imports torch, which reads it once.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _hermetic_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hf-cache"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run_cli(*args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run `python -m renderer ARGS` as a user would, capturing text output."""
    return subprocess.run([sys.executable, "-m", "renderer", *map(str, args)], cwd=cwd or REPO,
                          env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def invoke_cli(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run `svdrender ARGS` in this process (click's CliRunner on renderer.cli.main), from `cwd` (the repository by
    default), with `env` set on top of os.environ; the exit code and output as run_cli gives them.

    The same code as the real CLI minus a fresh interpreter's seconds of importing torch: for tests of what a command
    does, not of the process boundary (signals, locks between processes, imports, launchers), which use run_cli.
    An exception the CLI lets escape is raised here, so a test fails where a user would see a traceback."""
    from click.testing import CliRunner

    from renderer.cli import main

    args = [str(a) for a in args]
    before, environ = Path.cwd(), dict(os.environ)
    os.chdir(cwd or REPO)
    try:
        result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    finally:
        # The render command sets process-wide variables for itself (OMP_WAIT_POLICY); later tests and their
        # subprocesses must not inherit them.
        os.chdir(before)
        os.environ.clear()
        os.environ.update(environ)
    return subprocess.CompletedProcess(["svdrender", *args], result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe (dedented YAML) into tmp_path next to copies of the example inputs; return its path."""
    shutil.copytree(INPUTS, tmp_path / "inputs", dirs_exist_ok=True)

    def write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


TINY_RECIPE = """
version: 1
model: builtin:tiny
output: {dir: out}
defaults:
  width: 64
  height: 64
  num_frames: 4
  num_inference_steps: 3
  decode_chunk_size: 2
items:
  - name: coffee
    image: inputs/coffee.jpg
"""


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
