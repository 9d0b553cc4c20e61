"""The output-format and profile tables are the one place those facts are defined: the schemas, the shipped ffmpeg
and the writers must agree with them."""

import json
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest

from renderer.formats import DEFAULT_FORMATS, FORMATS

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _recipe_formats_schema():
    return json.loads((SCHEMAS / "recipe.schema.json").read_text())["properties"]["output"]["properties"]["formats"]


def test_recipe_schema_lists_exactly_the_registered_formats():
    formats = _recipe_formats_schema()
    assert set(formats["items"]["enum"]) == set(FORMATS)
    assert tuple(formats["default"]) == DEFAULT_FORMATS
    for name in FORMATS:
        assert name in formats["description"], f"the schema's description of output.formats omits {name}"


def test_manifest_schema_lists_exactly_the_registered_formats():
    text = (SCHEMAS / "manifest.schema.json").read_text()
    enums = [node["enum"] for node in _walk(json.loads(text)) if "enum" in node and "mp4" in node["enum"]]
    assert enums, "manifest.schema.json names no output format"
    assert all(set(enum) == set(FORMATS) for enum in enums), enums


def test_shipped_ffmpeg_has_every_registered_encoder():
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True,
                         text=True, timeout=60).stdout
    names = {line.split()[1] for line in out.splitlines() if len(line.split()) > 1}
    missing = [f.encoder.codec for f in FORMATS.values() if f.encoder and f.encoder.codec not in names]
    assert not missing


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_is_complete(fmt):
    f = FORMATS[fmt]
    assert (f.encoder is not None) == f.is_file
    if f.is_file:
        assert f.mime and f.extension
    if f.shown_as == "video":
        assert f.mime.startswith("video/")


def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_recipe_schema_lists_exactly_the_registered_profiles():
    from renderer.speed.profiles import DEFAULT_PROFILE, PROFILES

    profile = json.loads((SCHEMAS / "recipe.schema.json").read_text())["properties"]["performance"]["properties"][
        "profile"]
    assert tuple(profile["enum"]) == PROFILES
    assert profile["default"] == DEFAULT_PROFILE


def test_the_performance_request_has_exactly_the_recipe_schemas_performance_settings_and_defaults():
    # A setting added to the schema but not to PerformanceRequest would fail every recipe that uses it, the other way
    # round it could never be set: the two lists are one fact.
    from dataclasses import fields

    from renderer.speed.profiles import PerformanceRequest

    properties = json.loads((SCHEMAS / "recipe.schema.json").read_text())["properties"]["performance"]["properties"]
    assert {f.name: f.default for f in fields(PerformanceRequest)} == {
        name: spec["default"] for name, spec in properties.items()}


def test_picks_schema_and_the_picks_module_agree():
    from renderer.picks import PICKS_KIND, PICKS_VERSION, picks_template

    schema = json.loads((SCHEMAS / "picks.schema.json").read_text())
    assert (schema["properties"]["kind"]["const"], schema["properties"]["version"]["const"]) == (PICKS_KIND,
                                                                                                 PICKS_VERSION)
    # The page exports the template with its jobs filled in: the template has every key the schema knows.
    assert set(picks_template(recipe=None, recipe_path=None, run_id=None, output_dir=None)) == set(
        schema["properties"])


def test_model_families_and_builtin_configs_hold_values_a_recipe_may_set():
    from renderer.model_families import BUILTIN_CONFIGS, FAMILIES
    from renderer.recipe import MODEL_SETTINGS, SETTING_NAMES, _Validator, schema

    settings = schema()["$defs"]["settings"]["properties"]
    assert set(MODEL_SETTINGS) <= set(SETTING_NAMES)
    assert len({f.repo_id.casefold() for f in FAMILIES}) == len({f.name for f in FAMILIES}) == len(FAMILIES)
    for family in FAMILIES:
        assert _Validator(settings["num_frames"]).is_valid(family.num_frames), family
        for name, value in family.fixed:
            assert name in MODEL_SETTINGS and _Validator(settings[name]).is_valid(value), (family, name)
    for model_id, builtin in BUILTIN_CONFIGS.items():
        assert _Validator(settings["num_frames"]).is_valid(builtin.unet["num_frames"]), model_id


@pytest.mark.parametrize("setting, registry", [("loop", "LOOPS"), ("interpolation", "INTERPOLATORS")])
def test_schemas_list_exactly_the_registered_loops_and_interpolators(setting, registry):
    from renderer import motion

    names = list(getattr(motion, registry))
    recipe = json.loads((SCHEMAS / "recipe.schema.json").read_text())["$defs"]["settings"]["properties"][setting]
    sidecar = json.loads((SCHEMAS / "manifest.schema.json").read_text())["$defs"]["job"]["properties"]["settings"]
    assert recipe["enum"] == names and recipe["default"] == names[0]
    assert sidecar["properties"][setting]["enum"] == names
    for name in names:
        assert name in recipe["description"], f"the schema's description of {setting} omits {name}"
    assert set(motion.SETTING_NAMES) <= set(json.loads((SCHEMAS / "recipe.schema.json").read_text())["$defs"][
        "settings"]["properties"])
