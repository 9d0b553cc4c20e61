"""The `svdrender-validate` pre-commit hook, run by the real `pre-commit try-repo` in a throwaway git repository:
it fails on a bad recipe with svdrender's located message, passes good ones, and leaves other YAML alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import INPUTS, REPO, cli_env

BIN = Path(sys.executable).parent


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=_env(cwd))


def _env(tmp) -> dict:
    # The hook uses the svdrender of the environment pre-commit runs in: this venv, first on PATH.
    return cli_env(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PRE_COMMIT_HOME=str(Path(tmp) / ".pc"),
                   GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
                   GIT_COMMITTER_EMAIL="t@example.com", GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")


@pytest.fixture
def project(tmp_path):
    """A hook repository holding this repo's .pre-commit-hooks.yaml, and a project with recipes to check."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    shutil.copy(REPO / ".pre-commit-hooks.yaml", hooks)
    git("init", "-q", cwd=hooks)
    git("add", ".", cwd=hooks)
    git("commit", "-qm", "hooks", cwd=hooks)

    proj = tmp_path / "project"
    shutil.copytree(INPUTS, proj / "recipes" / "inputs")
    files = {
        "recipes/good.yaml": "version: 1\nmodel: builtin:tiny\nitems:\n  - image: inputs/coffee.jpg\n",
        "recipes/bad.yml": "version: 1\ndefaults: {widht: 64, fit: squash}\nitems:\n  - image: inputs/coffee.jpg\n",
        "recipes/shared/presets.yaml": "version: 1\npresets: {calm: {scheduler: euler}}\n",
        ".github/workflows/ci.yaml": "on: push\njobs: {}\n",
    }
    for name, text in files.items():
        (proj / name).parent.mkdir(parents=True, exist_ok=True)
        (proj / name).write_text(text, encoding="utf-8")
    git("init", "-q", cwd=proj)
    git("add", ".", cwd=proj)
    return proj


def try_repo(proj: Path, *args) -> subprocess.CompletedProcess:
    exe = BIN / "pre-commit"
    assert exe.exists(), "pre-commit is missing: pip install -e '.[test]' (tests/run does)"
    return subprocess.run([str(exe), "try-repo", str(proj.parent / "hooks"), "svdrender-validate", *args], cwd=proj,
                          capture_output=True, text=True, env=_env(proj.parent), timeout=300)


def test_hook_fails_on_a_bad_recipe_and_names_every_problem(project):
    proc = try_repo(project, "--all-files")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "svdrender validate" in proc.stdout and "Failed" in proc.stdout
    assert "recipes/bad.yml:2:12: $.defaults.widht: unknown key 'widht'; did you mean 'width'?" in proc.stdout
    assert "recipes/bad.yml:2:28: $.defaults.fit: 'squash' is not one of 'crop', 'pad', 'stretch'" in proc.stdout
    assert "2 problems found.\n" in proc.stdout and "nothing was rendered" not in proc.stdout
    # Only recipes are checked: not the include fragment, not other YAML, and good recipes print nothing.
    assert "presets.yaml" not in proc.stdout and "ci.yaml" not in proc.stdout and "good.yaml" not in proc.stdout


def test_hook_passes_good_recipes(project):
    git("rm", "-q", "--cached", "recipes/bad.yml", cwd=project)
    (project / "recipes" / "bad.yml").unlink()
    proc = try_repo(project, "--all-files")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "svdrender validate" in proc.stdout and "Passed" in proc.stdout


def test_hook_skips_when_no_recipe_changed(project):
    proc = try_repo(project, "--files", ".github/workflows/ci.yaml", "recipes/shared/presets.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(no files to check)Skipped" in proc.stdout
