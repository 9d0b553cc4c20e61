"""Every YAML recipe shown in README.md and docs/*.md validates with the real validator, as written.

A ```yaml block is a recipe unless its first line starts with `# fragment` (a partial recipe, or another tool's
YAML); fragments must still parse as YAML. Each recipe is validated in a throwaway git repository laid out like this
one (recipes/ with the example inputs and shared includes), so its relative paths mean what they say in the docs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, RECIPES
from renderer.errors import RecipeError
from renderer.recipe import load_recipe

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
FRAGMENT = "# fragment"


def _blocks() -> list[tuple[str, str]]:
    """(doc:line, text) of every ```yaml block."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            found.append((f"{doc.relative_to(REPO)}:{text.count(chr(10), 0, match.start()) + 1}", match.group(1)))
    return found


BLOCKS = _blocks()
RECIPE_BLOCKS = [(where, text) for where, text in BLOCKS if not text.startswith(FRAGMENT)]
FRAGMENTS = [(where, text) for where, text in BLOCKS if text.startswith(FRAGMENT)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs-repo")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copytree(RECIPES / "inputs", root / "recipes" / "inputs")
    shutil.copytree(RECIPES / "shared", root / "recipes" / "shared")
    return root


def test_the_docs_show_recipes():
    assert sum(where.startswith("README.md:") for where, _ in RECIPE_BLOCKS) >= 2


@pytest.mark.parametrize("where, text", RECIPE_BLOCKS, ids=[w for w, _ in RECIPE_BLOCKS])
def test_recipe_in_the_docs_validates(workspace, where, text):
    path = workspace / "recipes" / "from_docs.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        recipe = load_recipe(path)
    except RecipeError as exc:
        pytest.fail(f"the recipe at {where} does not validate:\n{exc}")
    assert recipe.items


@pytest.mark.parametrize("where, text", FRAGMENTS, ids=[w for w, _ in FRAGMENTS])
def test_fragment_in_the_docs_is_yaml(where, text):
    assert yaml.safe_load(text) is not None, where
