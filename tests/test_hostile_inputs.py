"""Hostile or broken recipes and images: each is refused through the CLI with exit 2 and one line that names the
file and the line to fix (a whole-file problem, such as an empty file, names the file alone), and nothing renders.

The battery runs `svdrender render --dry-run` in-process (click's runner: the real command, without a Python start
per case); test_cli.py runs the same refusal in a subprocess and checks that torch is never imported."""

import struct
import zlib
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from PIL import Image

from renderer.cli import main
from renderer.paths import GlobRefused, glob_files
from renderer.yamlio import MAX_FILE_BYTES

HEADER = "version: 1\nmodel: builtin:tiny\n"
GOOD_ITEM = "items:\n  - image: inputs/coffee.jpg\n"


@dataclass(frozen=True)
class Case:
    id: str
    recipe: str | bytes
    where: str | None  # "line:col" of the problem; None for a whole-file problem
    message: str  # the rest of the line, after "file:line:col: "
    name: str = "recipe.yaml"  # "repo/recipe.yaml" puts the copied inputs outside the recipe's folder


def alias_bomb() -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


CASES = [
    # YAML itself
    Case("python-tag", "version: 1\nitems: !!python/object/apply:os.system ['touch pwned']\n", "2:8",
         "$.items: YAML tag tag:yaml.org,2002:python/object/apply:os.system is not allowed; recipes use plain YAML "
         "values only"),
    Case("custom-tag", HEADER + "name: !include other.yaml\n" + GOOD_ITEM, "3:7",
         "$.name: YAML tag !include is not allowed; recipes use plain YAML values only"),
    Case("alias-bomb", alias_bomb(), "1:42",
         "YAML aliases expand to more than 200,000 values; refusing to expand further (alias bomb?)"),
    Case("deep-nesting", HEADER + "name: " + "[" * 100 + "]" * 100 + "\n" + GOOD_ITEM, "3:71",
         "nesting deeper than 64 levels"),
    Case("duplicate-key", HEADER + "model: builtin:tiny\n" + GOOD_ITEM, "3:1",
         "$.model: duplicate key 'model' (first defined at line 2); remove one of them"),
    Case("unclosed-bracket", HEADER + "items: [{image: inputs/coffee.jpg}\nname: x\n", "4:1",
         "YAML syntax error: while parsing a flow sequence expected ',' or ']', but got '<scalar>'"),
    Case("tab-indent", HEADER + "items:\n\t- image: inputs/coffee.jpg\n", "4:1",
         "YAML syntax error: while scanning for the next token found character '\\t' that cannot start any token"),
    Case("not-utf8", HEADER.encode() + b"name: caf\xe9\n" + GOOD_ITEM.encode(), "3:10",
         "is not UTF-8 text; save the recipe as UTF-8"),
    Case("empty", "", None, "is empty; a recipe needs at least `version: 1` and `items`"),
    Case("only-comments", "# nothing here\n", None, "is empty; a recipe needs at least `version: 1` and `items`"),
    Case("top-level-list", "- version: 1\n- items: []\n", "1:1", "$: a recipe must be a mapping of keys, got a list"),
    Case("top-level-string", "hello\n", "1:1", "$: a recipe must be a mapping of keys, got a string"),
    Case("two-documents", HEADER + GOOD_ITEM + "---\n" + HEADER, "6:1", "holds several YAML documents; a recipe is one"),
    Case("too-big", HEADER + "#" * MAX_FILE_BYTES + "\n", None,
         f"is {MAX_FILE_BYTES + len(HEADER) + 1:,} bytes; recipes are limited to 1,048,576 bytes"),
    Case("merge-non-mapping", HEADER + "items:\n  - <<: 1\n    image: inputs/coffee.jpg\n", "4:9",
         "$.items[0]: '<<' merges mappings only"),
    Case("list-as-key", HEADER + "? [a, b]\n: 1\n" + GOOD_ITEM, "3:3", "mapping keys must be plain strings"),
    # values
    Case("name-no", HEADER + "name: no\n" + GOOD_ITEM, "3:7",
         "$.name: expected string, got a boolean False (YAML reads unquoted no as false; quote it as \"no\" if you "
         "meant text)"),
    Case("seed-1e3", HEADER + "defaults: {seeds: [1e3]}\n" + GOOD_ITEM, "3:20",
         "$.defaults.seeds[0]: expected integer, got a string '1e3' (YAML reads 1e3 as text, not a number; write "
         "1000)"),
    Case("quoted-number", HEADER + "defaults: {width: '64'}\n" + GOOD_ITEM, "3:19",
         "$.defaults.width: expected integer, got a string '64'"),
    Case("width-not-multiple-of-8", HEADER + "defaults: {width: 577}\n" + GOOD_ITEM, "3:19",
         "$.defaults.width: 577 is not a multiple of 8; use 576 or 584"),
    Case("zero-frames", HEADER + "defaults: {num_frames: 0}\n" + GOOD_ITEM, "3:24",
         "$.defaults.num_frames: 0 is out of range: must be at least 1"),
    Case("too-many-steps", HEADER + "defaults: {num_inference_steps: 100000}\n" + GOOD_ITEM, "3:33",
         "$.defaults.num_inference_steps: 100000 is out of range: must be at most 1000"),
    Case("negative-motion", HEADER + "defaults: {motion_bucket_id: -1}\n" + GOOD_ITEM, "3:30",
         "$.defaults.motion_bucket_id: -1 is out of range: must be at least 0"),
    Case("noise-too-strong", HEADER + "defaults: {noise_aug_strength: 11}\n" + GOOD_ITEM, "3:32",
         "$.defaults.noise_aug_strength: 11 is out of range: must be at most 10"),
    Case("fractional-fps", HEADER + "defaults: {fps: 7.5}\n" + GOOD_ITEM, "3:17",
         "$.defaults.fps: expected integer, got a number 7.5"),
    Case("negative-seed", HEADER + "defaults: {seeds: [-1]}\n" + GOOD_ITEM, "3:20",
         "$.defaults.seeds[0]: -1 is out of range: must be at least 0"),
    Case("misspelt-key", HEADER + "defaults: {widht: 64}\n" + GOOD_ITEM, "3:12",
         "$.defaults.widht: unknown key 'widht'; did you mean 'width'?"),
    Case("version-2", "version: 2\nmodel: builtin:tiny\n" + GOOD_ITEM, "1:10", "$.version: must be 1, got 2"),
    Case("bad-dtype", "version: 1\nmodel: {id: builtin:tiny, dtype: float8}\n" + GOOD_ITEM, "2:34",
         "$.model.dtype: 'float8' is not one of 'auto', 'float16', 'bfloat16', 'float32'; did you mean 'float32'?"),
    Case("bad-format", HEADER + "output: {formats: [avi]}\n" + GOOD_ITEM, "3:20",
         "$.output.formats[0]: 'avi' is not one of 'mp4', 'webm', 'gif', 'webp', 'frames'"),
    Case("bad-fit", HEADER + "defaults: {fit: zoom}\n" + GOOD_ITEM, "3:17",
         "$.defaults.fit: 'zoom' is not one of 'crop', 'pad', 'stretch'"),
    Case("item-name-traversal", HEADER + "items:\n  - {name: ../../etc/cron.d/x, image: inputs/coffee.jpg}\n", "4:12",
         "$.items[0].name: '../../etc/cron.d/x' is not a safe name: use letters, digits, '.', '_' and '-', starting "
         "with a letter or digit (at most 64 characters)"),
    Case("item-name-slash", HEADER + "items:\n  - {name: a/b, image: inputs/coffee.jpg}\n", "4:12",
         "$.items[0].name: 'a/b' is not a safe name: use letters, digits, '.', '_' and '-', starting with a letter "
         "or digit (at most 64 characters)"),
    Case("preset-name-traversal", HEADER + "presets:\n  ../x: {scheduler: euler}\n" + GOOD_ITEM, "4:3",
         "$.presets: '../x' is not a safe name: use letters, digits, '.', '_' and '-', starting with a letter or "
         "digit (at most 64 characters)"),
    Case("no-items", HEADER + "items: []\n", "3:8", "$.items: must not be empty"),
    Case("image-and-glob", HEADER + "items:\n  - {image: inputs/coffee.jpg, glob: 'inputs/*.jpg'}\n", "4:32",
         "$.items[0].glob: an item has either `image` or `glob`, not both"),
    Case("item-without-image", HEADER + "items:\n  - {name: x}\n", "4:5",
         "$.items[0]: an item needs an `image` or a `glob`"),
    Case("opt-in-not-boolean", HEADER + "allow_inputs_outside: 'maybe'\n" + GOOD_ITEM, "3:23",
         "$.allow_inputs_outside: expected boolean, got a string 'maybe'"),
    # paths: the recipe's folder is tmp/repo, the copied inputs are in tmp/inputs
    Case("image-dotdot", HEADER + "items:\n  - image: ../inputs/coffee.jpg\n", "4:12",
         "$.items[0].image: ../inputs/coffee.jpg resolves to {tmp}/inputs/coffee.jpg, outside the recipe's "
         "repository {tmp}/repo; move it inside, or set `allow_inputs_outside: true` at the top of the recipe",
         "repo/recipe.yaml"),
    Case("image-symlink", HEADER + "items:\n  - image: link.jpg\n", "4:12",
         "$.items[0].image: link.jpg resolves to {tmp}/inputs/coffee.jpg, outside the recipe's repository "
         "{tmp}/repo; move it inside, or set `allow_inputs_outside: true` at the top of the recipe",
         "repo/recipe.yaml"),
    Case("image-absolute", HEADER + "items:\n  - image: /etc/passwd\n", "4:12",
         "$.items[0].image: /etc/passwd resolves to /etc/passwd, outside the recipe's repository {tmp}/repo; move it "
         "inside, or set `allow_inputs_outside: true` at the top of the recipe", "repo/recipe.yaml"),
    Case("glob-dotdot", HEADER + "items:\n  - glob: ../inputs/c*.jpg\n", "4:11",
         "$.items[0].glob: glob '../inputs/c*.jpg' starts at {tmp}/inputs, outside the recipe's repository "
         "{tmp}/repo; move the files inside, or set `allow_inputs_outside: true` at the top of the recipe",
         "repo/recipe.yaml"),
    Case("include-absolute", HEADER + "include: [/etc/passwd]\n" + GOOD_ITEM, "3:11",
         "$.include[0]: /etc/passwd resolves to /etc/passwd, outside the recipe's repository {tmp}/repo; move it "
         "inside, or set `allow_inputs_outside: true` at the top of the recipe", "repo/recipe.yaml"),
    Case("include-dotdot", HEADER + "include: [../shared.yaml]\nitems:\n  - image: link.jpg\n", "3:11",
         "$.include[0]: ../shared.yaml resolves to {tmp}/shared.yaml, outside the recipe's repository {tmp}/repo; "
         "move it inside, or set `allow_inputs_outside: true` at the top of the recipe", "repo/recipe.yaml"),
    # images, decoded during validation
    Case("fake-png", HEADER + "items:\n  - image: inputs/fake.png\n", "4:12",
         "$.items[0].image: inputs/fake.png: cannot be decoded: not a PNG, JPEG or WEBP image"),
    Case("truncated-jpeg", HEADER + "items:\n  - image: inputs/truncated.jpg\n", "4:12",
         "$.items[0].image: inputs/truncated.jpg: cannot be decoded: image file is truncated (5 bytes not processed)"),
    Case("gif", HEADER + "items:\n  - image: inputs/anim.gif\n", "4:12",
         "$.items[0].image: inputs/anim.gif: is a GIF file; svdrender accepts PNG, JPEG or WEBP"),
    Case("bmp-named-png", HEADER + "items:\n  - image: inputs/bitmap.png\n", "4:12",
         "$.items[0].image: inputs/bitmap.png: is a BMP file; svdrender accepts PNG, JPEG or WEBP"),
    Case("heic", HEADER + "items:\n  - image: inputs/photo.heic\n", "4:12",
         "$.items[0].image: inputs/photo.heic: is a HEIC file; svdrender accepts PNG, JPEG or WEBP"),
    Case("decompression-bomb", HEADER + "items:\n  - image: inputs/bomb.png\n", "4:12",
         "$.items[0].image: inputs/bomb.png: image is too large; svdrender accepts at most 64 megapixels (downscale "
         "it first)"),
    Case("empty-image", HEADER + "items:\n  - image: inputs/empty.png\n", "4:12",
         "$.items[0].image: inputs/empty.png: cannot be decoded: not a PNG, JPEG or WEBP image"),
    Case("image-is-folder", HEADER + "items:\n  - image: inputs\n", "4:12",
         "$.items[0].image: inputs: is a directory, not an image file"),
    Case("missing-image", HEADER + "items:\n  - image: inputs/gone.jpg\n", "4:12",
         "$.items[0].image: inputs/gone.jpg: image file not found"),
    # issue 20: names, confinement, strict values, bounds
    Case("name-trailing-newline", HEADER + "items:\n  - {name: \"coffee\\n\", image: inputs/coffee.jpg}\n", "4:12",
         "$.items[0].name: 'coffee\\n' is not a safe name: use letters, digits, '.', '_' and '-', "
         "starting with a letter or digit (at most 64 characters)"),
    Case("name-temporary-marker", HEADER + "items:\n  - {name: a.svdtmp-1, image: inputs/coffee.jpg}\n", "4:12",
         "$.items[0].name: 'a.svdtmp-1' contains '.svdtmp-', the mark of svdrender's temporary files "
         "(the end-of-run sweep would delete its outputs); choose another name"),
    Case("name-reserved-any-case", HEADER + "items:\n  - {name: INDEX.HTML, image: inputs/coffee.jpg}\n", "4:12",
         "$.items[0].name: 'INDEX.HTML' is the name of a file svdrender writes into the output folder; "
         "choose another name"),
    Case("name-windows-device", HEADER + "items:\n  - {name: con.x, image: inputs/coffee.jpg}\n", "4:12",
         "$.items[0].name: 'con.x' is a device name on Windows, which no file there can take; choose "
         "another name"),
    Case("preset-aliases",
         HEADER + "items:\n  - {image: inputs/coffee.jpg, presets: [euler, Euler, k_euler]}\n", "4:49",
         "$.items[0].presets[1]: 'euler' (at 4:42), 'Euler' (at 4:49), 'k_euler' (at 4:56) name one "
         "preset, euler, 3 times; list it once"),
    Case("preset-names-differ-in-case", HEADER + "presets:\n  fast: {}\n  Fast: {}\n" + GOOD_ITEM, "5:3",
         "$.presets.Fast: preset name 'Fast' differs from 'fast' (at 4:3) only in case; their output "
         "folders would collide on a case-insensitive file system"),
    Case("item-names-differ-in-case",
         HEADER + "items:\n  - {name: ok, image: inputs/coffee.jpg}\n"
         "  - {name: OK, image: inputs/rocket.jpg}\n", "5:12",
         "$.items[1].name: item name 'OK' differs from 'ok' only in case (their folders would collide on "
         "a case-insensitive file system) (first at line 4); give one of them a different `name:`"),
    Case("glob-stems-differ-in-case", HEADER + "items:\n  - glob: inputs/cases/*.jpg\n", "4:11",
         "$.items[0].glob: item name 'dup' differs from 'Dup' only in case (their folders would collide "
         "on a case-insensitive file system) (first at line 4); rename one of the files"),
    Case("output-absolute", HEADER + "output: {dir: /etc}\n" + GOOD_ITEM, "3:15",
         "$.output.dir: /etc resolves to /etc, outside the recipe's repository {tmp}; write inside it, "
         "or set `allow_output_outside: true` at the top of the recipe"),
    Case("output-dotdot", HEADER + "output: {dir: " + "../" * 16 + "}\n" + GOOD_ITEM, "3:15",
         "$.output.dir: " + "../" * 16 + " resolves to /, outside the recipe's repository {tmp}; write inside "
         "it, or set `allow_output_outside: true` at the top of the recipe"),
    Case("output-holds-the-recipe", HEADER + "output: {dir: .}\n" + GOOD_ITEM, "3:15",
         "$.output.dir: . resolves to {tmp}, which holds the recipe itself; use a folder of its own, "
         "such as renders/<name>"),
    Case("glob-absolute", HEADER + "items:\n  - glob: /**/*.png\n", "4:11",
         "$.items[0].glob: glob '/**/*.png' is absolute; write it relative to the recipe's folder, or "
         "set `allow_inputs_outside: true` at the top of the recipe"),
    Case("glob-dotdot-after-wildcard", HEADER + "items:\n  - glob: inputs/*/../../../*.jpg\n", "4:11",
         "$.items[0].glob: glob 'inputs/*/../../../*.jpg' has '..' after a wildcard; put every '..' "
         "before the first wildcard"),
    Case("int-written-as-float", HEADER + "defaults: {width: 64.0}\n" + GOOD_ITEM, "3:19",
         "$.defaults.width: expected integer, got a number 64.0"),
    Case("seed-written-as-float", HEADER + "defaults: {seeds: [1.0]}\n" + GOOD_ITEM, "3:20",
         "$.defaults.seeds[0]: expected integer, got a number 1.0"),
    Case("int-written-as-boolean", HEADER + "defaults: {num_frames: true}\n" + GOOD_ITEM, "3:24",
         "$.defaults.num_frames: expected integer, got a boolean True"),
    Case("nan", HEADER + "defaults: {noise_aug_strength: .nan}\n" + GOOD_ITEM, "3:32",
         "$.defaults.noise_aug_strength: .nan is not a finite number; recipes hold no NaN or infinity"),
    Case("infinity", HEADER + "presets:\n  p: {sigmas: [.inf, 1.0, 0.0]}\n" + GOOD_ITEM, "4:16",
         "$.presets.p.sigmas[0]: .inf is not a finite number; recipes hold no NaN or infinity"),
    Case("seed-2-to-64", HEADER + "defaults: {seeds: [18446744073709551616]}\n" + GOOD_ITEM, "3:20",
         "$.defaults.seeds[0]: 18446744073709551616 is too large: integers are at most 2**63 - 1 "
         "(9223372036854775807)"),
    Case("seed-2-to-63", HEADER + "defaults: {seeds: [9223372036854775808]}\n" + GOOD_ITEM, "3:20",
         "$.defaults.seeds[0]: 9223372036854775808 is too large: integers are at most 2**63 - 1 "
         "(9223372036854775807)"),
    Case("seed-sweep-float", HEADER + "defaults: {seeds: {start: 1.5, count: 3}}\n" + GOOD_ITEM, "3:27",
         "$.defaults.seeds.start: expected integer, got a number 1.5"),
    Case("seed-sweep-past-2-to-63",
         HEADER + "defaults: {seeds: {start: 9223372036854775800, count: 10}}\n" + GOOD_ITEM, "3:55",
         "$.defaults.seeds.count: the sweep ends at seed 9223372036854775809, above the largest seed "
         "9223372036854775807 (2**63 - 1); lower start or count"),
    Case("nul-in-image", HEADER + "items:\n  - image: \"inputs/coffee\\0.jpg\"\n", "4:12",
         "$.items[0].image: contains a NUL character (\\0), which no file name or setting can hold"),
    Case("nul-in-glob", HEADER + "items:\n  - glob: \"inputs/*\\0.jpg\"\n", "4:11",
         "$.items[0].glob: contains a NUL character (\\0), which no file name or setting can hold"),
    Case("nul-in-include", HEADER + "include: [\"shared\\0.yaml\"]\n" + GOOD_ITEM, "3:11",
         "$.include[0]: contains a NUL character (\\0), which no file name or setting can hold"),
    Case("nul-in-output", HEADER + "output: {dir: \"out\\0\"}\n" + GOOD_ITEM, "3:15",
         "$.output.dir: contains a NUL character (\\0), which no file name or setting can hold"),
    Case("nesting-600-levels", HEADER + "name: " + "[" * 600 + "]" * 600 + "\n" + GOOD_ITEM, "3:71",
         "nesting deeper than 64 levels"),
    Case("model-neither-hub-id-nor-folder", "version: 1\nmodel: foo\n" + GOOD_ITEM, "2:8",
         "$.model: model 'foo' is neither a hub id (org/name), nor a built-in model (builtin:tiny, "
         "builtin:tiny-14, builtin:svd-xt-random), nor an existing folder"),
    # Found by tests/test_recipe_fuzz.py: a home folder that cannot be determined raised RuntimeError.
    Case("model-home-of-no-such-user", "version: 1\nmodel: ~no-such-user-here/svd\n" + GOOD_ITEM, "2:8",
         "$.model: model folder ~no-such-user-here/svd does not exist (looked for {tmp}/~no-such-user-here/svd); "
         "fix the path, or use a hub id such as stabilityai/stable-video-diffusion-img2vid-xt"),
    Case("model-folder-missing", "version: 1\nmodel: ./weights/svd\n" + GOOD_ITEM, "2:8",
         "$.model: model folder ./weights/svd does not exist (looked for {tmp}/weights/svd); fix the "
         "path, or use a hub id such as stabilityai/stable-video-diffusion-img2vid-xt"),
    Case("max-jobs-above-ceiling", HEADER + "limits: {max_jobs: 2000000}\n" + GOOD_ITEM, "3:20",
         "$.limits.max_jobs: 2000000 is out of range: must be at most 1000000"),
]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (and whose pixels are missing): a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


@pytest.fixture
def bad_inputs(write_recipe, tmp_path):
    """The example inputs plus broken and hostile ones; a folder `repo` whose inputs lie outside it."""
    write_recipe("version: 1\n", name="shared.yaml")
    inputs = tmp_path / "inputs"
    (inputs / "fake.png").write_text("not an image")
    coffee = (inputs / "coffee.jpg").read_bytes()
    (inputs / "truncated.jpg").write_bytes(coffee[: len(coffee) // 2])
    Image.new("P", (8, 8)).save(inputs / "anim.gif", format="GIF")
    Image.new("RGB", (8, 8)).save(inputs / "bitmap.png", format="BMP")
    (inputs / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(16))
    (inputs / "bomb.png").write_bytes(png_header_only(30000, 30000))
    (inputs / "empty.png").write_bytes(b"")
    (inputs / "cases").mkdir()
    for stem in ("dup", "Dup"):  # one name on a case-insensitive file system
        (inputs / "cases" / f"{stem}.jpg").write_bytes(coffee)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "link.jpg").symlink_to(inputs / "coffee.jpg")
    return write_recipe


def refusal(path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["render", "--dry-run", str(path)])
    return result.exit_code, result.stderr.splitlines()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_refused_with_exit_2_and_the_file_and_line(case, bad_inputs, tmp_path):
    if isinstance(case.recipe, bytes):
        path = tmp_path / case.name
        path.write_bytes(case.recipe)
    else:
        path = bad_inputs(case.recipe, name=case.name)
    code, lines = refusal(path)
    where = f"{path}:{case.where}" if case.where else str(path)
    assert code == 2
    assert lines[0] == f"{where}: {case.message.format(tmp=tmp_path)}"
    assert lines[-1].endswith("found; nothing was rendered.")
    assert not (path.parent / "out").exists() and not (path.parent / "renders").exists()


def test_inputs_outside_are_read_when_the_recipe_opts_in_or_the_repository_holds_them(bad_inputs, tmp_path):
    opted_in = bad_inputs(HEADER + "allow_inputs_outside: true\nitems:\n  - image: ../inputs/coffee.jpg\n"
                                   "  - image: link.jpg\n", name="repo/recipe.yaml")
    assert refusal(opted_in)[0] == 0
    (tmp_path / ".git").mkdir()  # now tmp is a repository holding both the recipe and its inputs
    assert refusal(bad_inputs(HEADER + "items:\n  - image: ../inputs/coffee.jpg\n", name="repo/other.yaml"))[0] == 0


def test_all_problems_of_a_hostile_recipe_are_reported_at_once(bad_inputs, tmp_path):
    path = bad_inputs(HEADER + "defaults: {width: 577, fps: 7.5}\nitems:\n  - image: ../inputs/coffee.jpg\n"
                               "  - image: inputs/gone.jpg\n", name="repo/recipe.yaml")
    code, lines = refusal(path)
    assert code == 2
    assert [line.split(": ")[0] for line in lines[:-1]] == [f"{path}:3:19", f"{path}:3:29", f"{path}:5:12",
                                                            f"{path}:6:12"]
    assert lines[-1] == "4 problems found; nothing was rendered."


def test_a_glob_through_symlink_loops_answers_at_once_without_following_them(write_recipe, tmp_path):
    shots = tmp_path / "inputs" / "shots"
    (shots / "sub").mkdir(parents=True)
    (shots / "a.jpg").write_bytes((tmp_path / "inputs" / "coffee.jpg").read_bytes())
    (shots / "sub" / "b.jpg").write_bytes((tmp_path / "inputs" / "rocket.jpg").read_bytes())
    # Two links back to the folder itself: a walk that follows them never ends (it did, for minutes).
    (shots / "loop").symlink_to(".")
    (shots / "sub" / "loop").symlink_to(".")
    path = write_recipe(HEADER + "items:\n  - glob: inputs/shots/**/*.jpg\n")
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    jobs = [line.split()[0] for line in result.stdout.splitlines()[1:] if "/seed-" in line]
    assert jobs == ["a/euler/seed-0", "b/euler/seed-0"]


def test_a_glob_walk_stops_at_its_bound_with_the_reason(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i}.png").write_bytes(b"")
    with pytest.raises(GlobRefused) as info:
        glob_files(tmp_path, "**/*.jpg", tmp_path, max_entries=20)
    assert str(info.value) == "glob '**/*.jpg' looked at more than 20 folder entries; narrow it (e.g. a folder " \
                              "instead of **)"


def test_a_glob_walk_stops_at_its_time_bound_with_the_reason(tmp_path):
    for i in range(1001):  # the clock is read every 1,000 entries
        (tmp_path / f"f{i}.png").write_bytes(b"")
    with pytest.raises(GlobRefused) as info:
        glob_files(tmp_path, "*.jpg", tmp_path, max_seconds=0)
    assert str(info.value) == "glob '*.jpg' took more than 0 s; narrow it (e.g. a folder instead of **)"


def test_a_recipe_planning_millions_of_jobs_is_refused_before_any_is_built(bad_inputs):
    presets = "".join(f"  p{i}: {{}}\n" for i in range(30))
    items = "".join(f"  - {{name: i{i}, image: inputs/coffee.jpg}}\n" for i in range(10))
    path = bad_inputs(HEADER + "defaults:\n  seeds: {count: 10000}\n  presets: [" +
                      ", ".join(f"p{i}" for i in range(30)) + "]\npresets:\n" + presets + "items:\n" + items)
    assert path.stat().st_size < 4096
    for command in (["plan"], ["render", "--dry-run"], ["validate"]):
        result = CliRunner().invoke(main, [*command, str(path)])
        assert result.exit_code == 2
        assert result.stderr.splitlines()[0] == (
            f"{path}:38:3: $.items: the recipe plans 3,000,000 jobs, more than limits.max_jobs (10,000); split the "
            "recipe, or raise limits.max_jobs (at most 1,000,000)")
    raised = bad_inputs(path.read_text().replace("items:\n", "limits: {max_jobs: 1000000}\nitems:\n", 1))
    assert CliRunner().invoke(main, ["validate", str(raised)]).stderr.splitlines()[0] == (
        f"{raised}:37:20: $.limits.max_jobs: the recipe plans 3,000,000 jobs, more than limits.max_jobs (1,000,000); "
        "split the recipe, or raise limits.max_jobs (at most 1,000,000)")


def test_output_outside_the_repository_when_the_recipe_says_so_or_the_command_line_does(bad_inputs, tmp_path):
    outside = tmp_path / "elsewhere"  # the recipes below live in tmp/repo
    header = HEADER + "allow_inputs_outside: true\n"
    item = "items:\n  - image: ../inputs/coffee.jpg\n"
    opted_in = bad_inputs(header + f"allow_output_outside: true\noutput: {{dir: {outside}}}\n" + item,
                          name="repo/opted_in.yaml")
    assert refusal(opted_in)[0] == 0
    refused = bad_inputs(header + f"output: {{dir: {outside}}}\n" + item, name="repo/recipe.yaml")
    assert refusal(refused) == (2, [
        f"{refused}:4:15: $.output.dir: {outside} resolves to {outside}, outside the recipe's repository "
        f"{tmp_path / 'repo'}; write inside it, or set `allow_output_outside: true` at the top of the recipe",
        "1 problem found; nothing was rendered."])
    assert CliRunner().invoke(main, ["render", "--dry-run", "--out", str(outside), str(refused)]).exit_code == 0
    assert not outside.exists()


def test_model_ids_of_every_kind_that_can_load(bad_inputs, tmp_path):
    (tmp_path / "weights").mkdir()
    assert refusal(bad_inputs("version: 1\nmodel: weights\n" + GOOD_ITEM))[1][0].endswith(
        "$.model: model folder weights has no model_index.json; a local model is a folder saved with save_pretrained "
        "(or downloaded with `hf download`)")
    (tmp_path / "weights" / "model_index.json").write_text('{"_class_name": "StableVideoDiffusionPipeline"}')
    for model in ("stabilityai/stable-video-diffusion-img2vid-xt", "weights", "./weights", str(tmp_path / "weights"),
                  "builtin:tiny"):
        assert refusal(bad_inputs(f"version: 1\nmodel: {model}\n" + GOOD_ITEM))[0] == 0, model


def test_a_fifo_named_as_a_recipe_or_an_include_is_refused_without_waiting_for_a_writer(tmp_path):
    # Reading a FIFO blocks until something writes to it; a recipe check must answer at once instead.
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "main.yaml").write_text("version: 1\ninclude: [pipe.yaml]\nmodel: builtin:tiny\nitems: []\n")
    run = subprocess.run([sys.executable, "-m", "renderer", "validate", "pipe.yaml", "main.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert {"pipe.yaml: is not a regular file",
            "main.yaml:2:11: $.include[0]: included file pipe.yaml is not a regular file"} <= set(run.stderr.splitlines())
