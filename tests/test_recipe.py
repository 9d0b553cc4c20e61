"""recipe: schema + semantic validation, every error located at file:line:col, and the resolved Recipe."""

from pathlib import Path

import pytest

from conftest import RECIPES, TINY_RECIPE
from renderer.errors import RecipeError
from renderer.plan import make_plan
from renderer.recipe import load_recipe, setting_defaults


def errors(path: Path) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe):
    loaded = load_recipe(recipe)
    assert loaded.items
    assert recipe.read_text().startswith("# yaml-language-server: $schema=../schemas/recipe.schema.json")


def test_defaults_come_from_the_schema(write_recipe):
    recipe = load_recipe(write_recipe("version: 1\nitems: [{image: inputs/coffee.jpg}]\n"))
    job = make_plan(recipe).jobs[0]
    assert setting_defaults()["width"] == 1024
    assert job.id == "coffee/euler/seed-0"
    assert job.settings.width == 1024 and job.settings.height == 576 and job.settings.num_frames == 25
    assert recipe.model.id == "stabilityai/stable-video-diffusion-img2vid-xt"
    assert recipe.output_dir == (recipe.path.parent / "renders" / "recipe").resolve()


def test_precedence_defaults_preset_item(write_recipe):
    recipe = load_recipe(write_recipe("""
        version: 1
        defaults: {motion_bucket_id: 10, fps: 9, presets: [p], seeds: [3]}
        presets:
          p: {scheduler: euler, motion_bucket_id: 20, noise_aug_strength: 0.1}
        items:
          - {name: a, image: inputs/coffee.jpg, motion_bucket_id: 30}
          - {name: b, image: inputs/rocket.jpg}
    """))
    a, b = make_plan(recipe).jobs
    assert (a.id, a.settings.motion_bucket_id, a.settings.fps, a.settings.noise_aug_strength) == ("a/p/seed-3", 30, 9,
                                                                                                   0.1)
    assert (b.settings.motion_bucket_id, b.settings.fps) == (20, 9)


def test_all_errors_reported_at_once_with_locations(write_recipe):
    path = write_recipe("""
        version: 1
        model: builtin:tiny
        defaults:
          widht: 1024
          height: 577
          motion_bucket_id: high
        presets:
          fast: {scheduler: euler, num_inference_step: 10}
        items:
          - name: a
            image: inputs/coffee.jpg
            presets: [fsat]
    """)
    assert errors(path) == [
        f"{path}:4:3: $.defaults.widht: unknown key 'widht'; did you mean 'width'?",
        f"{path}:5:11: $.defaults.height: 577 is not a multiple of 8; use 576 or 584",
        f"{path}:6:21: $.defaults.motion_bucket_id: expected integer, got a string 'high'",
        f"{path}:8:28: $.presets.fast.num_inference_step: unknown key 'num_inference_step'; did you mean "
        "'num_inference_steps'?",
        f"{path}:12:15: $.items[0].presets[0]: unknown preset 'fsat'; did you mean 'fast'? (define it under "
        "`presets:` or use a built-in one; `svdrender presets` lists them)",
    ]


def test_semantic_errors_after_schema(write_recipe):
    path = write_recipe("""
        version: 1
        presets:
          fast: {scheduler: euler}
        items:
          - name: a
            image: inputs/coffee.jpg
            presets: [fsat]
          - name: a
            image: inputs/missing.png
          - glob: inputs/nothing/*.png
          - image: inputs/rocket.jpg
            min_guidance_scale: 4
    """)
    found = errors(path)
    assert found[0] == f"{path}:7:15: $.items[0].presets[0]: unknown preset 'fsat'; did you mean 'fast'? (define it " \
                       "under `presets:` or use a built-in one; `svdrender presets` lists them)"
    assert found[1] == f"{path}:8:11: $.items[1].name: item name 'a' is used twice (first at line 5); give one of " \
                       "them a different `name:`"
    assert found[2] == f"{path}:9:12: $.items[1].image: inputs/missing.png: image file not found"
    assert found[3] == f"{path}:10:11: $.items[2].glob: glob 'inputs/nothing/*.png' matches no files"
    assert found[4] == f"{path}:12:25: $.items[3].min_guidance_scale: min_guidance_scale 4 is above " \
                       "max_guidance_scale 3.0 for rocket/euler"
    assert len(found) == 5


def test_missing_and_undecodable_images_are_caught_at_validation(write_recipe, tmp_path):
    (tmp_path / "inputs" / "fake.png").write_text("not an image")
    path = write_recipe("""
        version: 1
        items:
          - image: inputs/fake.png
          - image: inputs/gone.jpg
    """)
    assert errors(path) == [
        f"{path}:3:12: $.items[0].image: inputs/fake.png: cannot be decoded: not a PNG, JPEG or WEBP image",
        f"{path}:4:12: $.items[1].image: inputs/gone.jpg: image file not found",
    ]


def test_yaml_surprises_are_explained(write_recipe):
    path = write_recipe("""
        version: 1
        name: no
        defaults: {seeds: [1e3]}
        items: [{image: inputs/coffee.jpg}]
    """)
    found = errors(path)
    assert f"{path}:2:7: $.name: expected string, got a boolean False (YAML reads unquoted no as false; quote it " \
           "as \"no\" if you meant text)" in found
    assert any(f"{path}:3:20: $.defaults.seeds[0]: " in e and "(YAML reads 1e3 as text, not a number; write 1000)" in e
               for e in found), found


def test_structure_errors(write_recipe):
    assert errors(write_recipe("- a\n- b\n"))[0].endswith("$: a recipe must be a mapping of keys, got a list")
    found = errors(write_recipe("version: 2\nitems: [{name: x}]\n"))
    assert any(e.endswith("$.version: must be 1, got 2") for e in found)
    assert any(e.endswith("$.items[0]: an item needs an `image` or a `glob`") for e in found)


def test_glob_items_and_includes(write_recipe, tmp_path):
    write_recipe("""
        version: 1
        defaults: {fps: 12}
        presets:
          shared: {scheduler: euler, motion_bucket_id: 99}
    """, name="shared.yaml")
    recipe = load_recipe(write_recipe("""
        version: 1
        include: [shared.yaml]
        defaults: {presets: [shared]}
        items:
          - glob: inputs/products/*.jpg
            name: p
    """))
    jobs = make_plan(recipe).jobs
    assert [j.id for j in jobs] == ["p-chelsea/shared/seed-0", "p-coffee/shared/seed-0"]
    assert jobs[0].settings.fps == 12 and jobs[0].settings.motion_bucket_id == 99


def test_errors_in_included_files_name_that_file(write_recipe):
    shared = write_recipe("version: 1\npresets:\n  bad: {scheduler: euler, fpss: 3}\n", name="shared.yaml")
    path = write_recipe("version: 1\ninclude: [shared.yaml]\nitems: [{image: inputs/coffee.jpg}]\n")
    assert errors(path) == [f"{shared}:3:27: $.presets.bad.fpss: unknown key 'fpss'; did you mean 'fps'?"]


def test_seed_sweep(write_recipe):
    recipe = load_recipe(write_recipe("version: 1\ndefaults: {seeds: {start: 5, count: 3}}\n"
                                      "items: [{image: inputs/coffee.jpg}]\n"))
    assert [j.seed for j in make_plan(recipe).jobs] == [5, 6, 7]


def test_tiny_recipe_fixture_is_valid(write_recipe):
    assert load_recipe(write_recipe(TINY_RECIPE)).model.id == "builtin:tiny"
