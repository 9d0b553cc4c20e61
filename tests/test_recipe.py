"""recipe: schema + semantic validation, every error located at file:line:col, and the resolved Recipe."""

from pathlib import Path

import pytest

from conftest import RECIPES, TINY_RECIPE
from click.testing import CliRunner

from renderer.cli import main
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


def validate(*paths) -> tuple[int, list[str], list[str]]:
    """`svdrender validate PATHS` in-process (the real command; the process boundary is not what is tested)."""
    result = CliRunner().invoke(main, ["validate", *map(str, paths)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout.splitlines(), result.stderr.splitlines()


def test_every_mistake_of_every_kind_in_one_validate_run(write_recipe, tmp_path):
    path = write_recipe("""
        version: 1
        model: foo
        include: [missing_shared.yaml]
        output: {dir: /etc}
        defaults:
          presets: [eulr]
          widht: 64
          width: 64.0
          height: 577
        presets:
          fast: {scheduler: euler}
          Fast: {scheduler: euler}
        items:
          - name: "coffee\\n"
            image: inputs/coffee.jpg
            presets: [euler, Euler, k_euler]
          - name: manifest.json
            image: inputs/gone.jpg
            presets: [DDIM]
            seeds: [1.0]
          - glob: /**/*.png
            presets: [fast]
          - {name: ok, image: inputs/coffee.jpg, presets: [fast], noise_aug_strength: .nan}
          - {name: OK, image: inputs/rocket.jpg, presets: [fast], seeds: {start: 0.5, count: 2}}
    """)
    code, out, err = validate(path)
    assert code == 2 and out == []
    assert err == [f"{path}:{where}: {message}" for where, message in [
        ("2:8", "$.model: model 'foo' is neither a hub id (org/name), nor a built-in model (builtin:tiny, "
                "builtin:tiny-14, builtin:svd-xt-random), nor an existing folder"),
        ("3:11", "$.include[0]: included file missing_shared.yaml does not exist"),
        ("4:15", f"$.output.dir: /etc resolves to /etc, outside the recipe's repository {tmp_path}; write inside it, "
                 "or set `allow_output_outside: true` at the top of the recipe"),
        # Reported although every item names its own presets.
        ("6:13", "$.defaults.presets[0]: unknown preset 'eulr'; did you mean 'euler'? (define it under `presets:` or "
                 "use a built-in one; `svdrender presets` lists them)"),
        ("7:3", "$.defaults.widht: unknown key 'widht'; did you mean 'width'?"),
        ("8:10", "$.defaults.width: expected integer, got a number 64.0"),
        ("9:11", "$.defaults.height: 577 is not a multiple of 8; use 576 or 584"),
        ("12:3", "$.presets.Fast: preset name 'Fast' differs from 'fast' (at 11:3) only in case; their output folders "
                 "would collide on a case-insensitive file system"),
        ("14:11", "$.items[0].name: 'coffee\\n' is not a safe name: use letters, digits, '.', '_' and '-', starting "
                  "with a letter or digit (at most 64 characters)"),
        ("16:22", "$.items[0].presets[1]: 'euler' (at 16:15), 'Euler' (at 16:22), 'k_euler' (at 16:29) name one "
                  "preset, euler, 3 times; list it once"),
        ("17:11", "$.items[1].name: 'manifest.json' is the name of a file svdrender writes into the output folder; "
                  "choose another name"),
        ("18:12", "$.items[1].image: inputs/gone.jpg: image file not found"),
        ("19:15", "$.items[1].presets[0]: 'DDIM' is wrong for SVD: DDIMScheduler gives SVD's UNet integer timesteps "
                  "instead of t = 0.25·ln σ (wrong videos, no error); zero-SNR rescaling and trailing spacing do not "
                  "change that; use 'euler' instead"),
        ("20:13", "$.items[1].seeds[0]: expected integer, got a number 1.0"),
        ("21:11", "$.items[2].glob: glob '/**/*.png' is absolute; write it relative to the recipe's folder, or set "
                  "`allow_inputs_outside: true` at the top of the recipe"),
        ("23:79", "$.items[3].noise_aug_strength: .nan is not a finite number; recipes hold no NaN or infinity"),
        ("24:12", "$.items[4].name: item name 'OK' differs from 'ok' only in case (their folders would collide on a "
                  "case-insensitive file system) (first at line 23); give one of them a different `name:`"),
        ("24:74", "$.items[4].seeds.start: expected integer, got a number 0.5"),
    ]] + ["18 problems found."]


def test_validate_counts_in_words(write_recipe):
    code, out, err = validate(write_recipe("version: 1\nmodel: builtin:tiny\nitems: [{image: inputs/coffee.jpg}]\n"))
    assert (code, err) == (0, []) and len(out) == 1 and out[0].endswith(": ok (1 item, 1 job)")
    code, out, err = validate(write_recipe("version: 1\nmodel: builtin:tiny\nitems: [{image: inputs/gone.jpg}]\n"))
    assert code == 2 and err[-1] == "1 problem found."


def test_a_model_mapping_without_id_is_reported_with_its_other_mistakes(write_recipe):
    # Found by tests/test_recipe_fuzz.py: this raised KeyError('id').
    path = write_recipe("version: 1\nmodel:\n  variant: []\nitems: [{image: inputs/coffee.jpg}]\n")
    assert errors(path) == [f"{path}:3:3: $.model: missing required key 'id'",
                            f"{path}:3:12: $.model.variant: expected string or null, got a list []"]
