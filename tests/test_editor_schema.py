"""Editor support: recipes name their schema for the YAML language server, every schema field explains itself
(title, description, default, examples), and an independent validator (the check-jsonschema CLI) agrees with
`svdrender validate` on the shipped recipes and on mistakes the schema alone can express."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema

from conftest import INPUTS, RECIPES, REPO, cli_env, load_json, run_cli

SCHEMA_PATH = REPO / "schemas" / "recipe.schema.json"
INCLUDE_SCHEMA_PATH = REPO / "schemas" / "include.schema.json"
SCHEMA = load_json(SCHEMA_PATH)
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
# Accepted by the schema only so that svdrender can refuse them with a reason: an example would invite them.
REFUSED = {"/$defs/preset/properties/timesteps", "/$defs/preset/properties/timestep_spacing",
           "/$defs/preset/properties/rescale_betas_zero_snr"}
# Fields without a static default: required ones, and ones whose default is computed (the description says which).
REQUIRED = {"/properties/items", "/$defs/selection/properties/seeds/oneOf/1/properties/count",
            "/$defs/item/properties/image", "/$defs/item/properties/glob"}
COMPUTED_DEFAULT = {"/properties/name", "/properties/output/properties/dir", "/$defs/item/properties/name",
                    "/$defs/preset/properties/description", "/$defs/preset/properties/sigmas"}
# The include fragment holds presets and defaults for other recipes: it names include.schema.json (no items).
FRAGMENTS = {RECIPES / "shared" / "presets.yaml"}


def fields(node, pointer=""):
    """(JSON pointer, schema) of every property declared anywhere in the schema."""
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{pointer}/properties/{name}", sub
        for key, sub in node.items():
            if key != "properties":
                yield from fields(sub, f"{pointer}/{key}")
        for name, sub in node.get("properties", {}).items():
            yield from fields(sub, f"{pointer}/properties/{name}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from fields(sub, f"{pointer}/{index}")


def test_every_shipped_recipe_names_its_schema():
    recipes = sorted(RECIPES.rglob("*.yaml")) + sorted(RECIPES.rglob("*.yml"))
    assert len(recipes) >= 5
    for recipe in recipes:
        first = recipe.read_text(encoding="utf-8").splitlines()[0]
        match = MODELINE.match(first)
        assert match, f"{recipe}: first line must be `# yaml-language-server: $schema=...`"
        expected = INCLUDE_SCHEMA_PATH if recipe in FRAGMENTS else SCHEMA_PATH
        assert (recipe.parent / match.group(1)).resolve() == expected


def test_every_field_has_title_description_default_and_examples():
    found = dict(fields(SCHEMA))
    assert len(found) >= 40
    assert REFUSED | REQUIRED | COMPUTED_DEFAULT <= set(found)
    for pointer, field in found.items():
        assert field.get("title") and field.get("description"), f"{pointer}: needs a title and a description"
        if pointer in REFUSED:
            assert "refused" in field["description"].lower() and "examples" not in field, pointer
            continue
        assert field.get("examples"), f"{pointer}: needs examples"
        if pointer in COMPUTED_DEFAULT:
            assert "default" in field["description"].lower(), f"{pointer}: say what the default is"
        if pointer not in REQUIRED | COMPUTED_DEFAULT:
            assert "default" in field, f"{pointer}: needs a default (or a reason in this test for having none)"


def test_examples_and_defaults_are_valid_values_of_their_field():
    for pointer, field in fields(SCHEMA):
        validator = jsonschema.Draft202012Validator({**field, "$defs": SCHEMA["$defs"]})
        values = list(field.get("examples", [])) + ([field["default"]] if "default" in field else [])
        for value in values:
            errors = [e.message for e in validator.iter_errors(value)]
            assert errors == [], f"{pointer}: {value!r}: {errors}"


def check_jsonschema(*files: Path, schema: Path = SCHEMA_PATH) -> dict:
    """The check-jsonschema CLI (an independent implementation) on recipe files, with a local schema."""
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert exe, "check-jsonschema is missing: pip install -e '.[test]' (tests/run does)"
    proc = subprocess.run([exe, "--schemafile", str(schema), "--output-format", "json", *map(str, files)],
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    result = json.loads(proc.stdout)
    assert proc.returncode == (0 if result["status"] == "ok" else 1), proc.stderr
    assert result.get("parse_errors", []) == []
    return result


def test_shipped_recipes_are_valid_for_both():
    recipes = [p for p in sorted(RECIPES.rglob("*.yaml")) if p not in FRAGMENTS]
    assert check_jsonschema(*recipes)["status"] == "ok"
    assert check_jsonschema(*FRAGMENTS, schema=INCLUDE_SCHEMA_PATH)["status"] == "ok"
    assert check_jsonschema(RECIPES / "demo.yaml", schema=INCLUDE_SCHEMA_PATH)["status"] == "fail"  # has items
    proc = run_cli("validate", *recipes)
    assert proc.returncode == 0, proc.stderr


# Mistakes a JSON Schema can express, each in its own recipe (whose images exist, so nothing else is wrong).
ONE_ITEM = "items:\n  - image: inputs/coffee.jpg\n"
BAD = {
    "unknown_top_key": "colour: red\n" + ONE_ITEM,
    "width_not_multiple_of_8": "defaults: {width: 100}\n" + ONE_ITEM,
    "zero_frames": "defaults: {num_frames: 0}\n" + ONE_ITEM,
    "fit_not_an_option": "defaults: {fit: squash}\n" + ONE_ITEM,
    "yaml_no_is_false": "defaults: {fit: no}\n" + ONE_ITEM,
    "motion_as_text": "defaults: {motion_bucket_id: high}\n" + ONE_ITEM,
    "unknown_format": "output: {formats: [avi]}\n" + ONE_ITEM,
    "duplicate_seeds": "defaults: {seeds: [1, 1]}\n" + ONE_ITEM,
    "sweep_without_count": "defaults: {seeds: {start: 3}}\n" + ONE_ITEM,
    "bad_dtype": "model:\n  id: builtin:tiny\n  dtype: float8\n" + ONE_ITEM,
    "preset_typo": "presets: {fast: {schedular: euler}}\n" + ONE_ITEM,
    "unsafe_preset_name": "presets: {'my preset': {scheduler: euler}}\n" + ONE_ITEM,
    "no_items": "",
    "empty_items": "items: []\n",
    "item_without_image": "items:\n  - name: lonely\n",
    "item_with_image_and_glob": "items:\n  - {image: inputs/coffee.jpg, glob: 'inputs/*.jpg'}\n",
    "unsafe_item_name": "items:\n  - {name: red sneaker, image: inputs/coffee.jpg}\n",
}


def _covers(parent: str, child: str) -> bool:
    return child == parent or child.startswith(parent + ".") or child.startswith(parent + "[")


def test_bad_recipes_are_invalid_for_both_at_the_same_place(tmp_path):
    shutil.copytree(INPUTS, tmp_path / "inputs")
    files = []
    for name, text in BAD.items():
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text("version: 1\n" + text, encoding="utf-8")

    independent: dict[str, list[str]] = {}
    for error in check_jsonschema(*files)["errors"]:
        independent.setdefault(Path(error["filename"]).stem, []).append(error["path"])
    proc = run_cli("validate", *files)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    ours: dict[str, list[str]] = {}
    for line in proc.stderr.splitlines()[:-1]:
        match = re.match(r"^(.+?\.yaml)(?::\d+:\d+)?: (\$\S*): ", line)
        assert match, line
        ours.setdefault(Path(match.group(1)).stem, []).append(match.group(2))

    assert sorted(independent) == sorted(ours) == sorted(p.stem for p in files)
    for name in ours:
        # svdrender often points deeper (at the unknown key, the failing oneOf branch) than a plain validator.
        for path in independent[name]:
            assert any(_covers(path, mine) for mine in ours[name]), (name, path, ours[name])
        for mine in ours[name]:
            assert any(_covers(path, mine) for path in independent[name]), (name, mine, independent[name])
