"""yamlio: positions of values, and the YAML inputs that must be refused with a located message."""

import time

import pytest

from renderer.errors import RecipeError
from renderer.yamlio import MAX_FILE_BYTES, json_path, load, loads


def problems(text: str) -> list[str]:
    with pytest.raises(RecipeError) as info:
        loads(text, "r.yaml")
    return [str(p) for p in info.value.problems]


def test_positions_of_values_and_keys():
    doc = loads("a: 1\nb:\n  - x\n  - {c: 2}\n", "r.yaml")
    assert doc.data == {"a": 1, "b": ["x", {"c": 2}]}
    assert (doc.values[("a",)].line, doc.values[("a",)].col) == (1, 4)
    assert doc.values[("b", 1, "c")].line == 4
    assert doc.keys[("b",)].line == 2


def test_duplicate_keys_name_both_lines():
    assert problems("a: 1\nb: 2\na: 3\n") == [
        "r.yaml:3:1: $.a: duplicate key 'a' (first defined at line 1); remove one of them"]


def test_anchors_aliases_and_merge_keys_work():
    doc = loads("base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n", "r.yaml")
    assert doc.data["item"] == {"x": 1, "y": 3}


def test_alias_bomb_is_rejected_quickly():
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 10):
        prev = f"*a{i-1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    start = time.perf_counter()
    found = problems("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 10  # the point is that it does not try to build 10^10 values
    assert found[0].endswith("YAML aliases expand to more than 200,000 values; refusing to expand further "
                             "(alias bomb?)")


def test_python_tags_are_refused_not_executed():
    found = problems("a: !!python/object/apply:os.system ['echo pwned']\n")
    assert found == ["r.yaml:1:4: $.a: YAML tag tag:yaml.org,2002:python/object/apply:os.system is not allowed; "
                     "recipes use plain YAML values only"]


def test_syntax_error_has_line_and_column():
    found = problems("a: [1, 2\nb: 3\n")
    assert found[0].startswith("r.yaml:2:")
    assert "YAML syntax error" in found[0]


def test_empty_file_and_several_documents():
    assert problems("") == ["r.yaml: is empty; a recipe needs at least `version: 1` and `items`"]
    assert problems("# only a comment\n") == ["r.yaml: is empty; a recipe needs at least `version: 1` and `items`"]
    assert problems("a: 1\n---\nb: 2\n")[0].endswith("holds several YAML documents; a recipe is one")


def test_non_utf8_size_cap_and_missing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(RecipeError) as info:
        load(bad, "bad.yaml")
    assert str(info.value) == "bad.yaml:1:10: is not UTF-8 text; save the recipe as UTF-8"
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(RecipeError, match="recipes are limited to 1,048,576 bytes"):
        load(big, "big.yaml")
    with pytest.raises(RecipeError, match="missing.yaml: no such file"):
        load(tmp_path / "missing.yaml", "missing.yaml")


def test_json_path_spelling():
    assert json_path(("presets", "fast", "sigmas", 2)) == "$.presets.fast.sigmas[2]"
    assert json_path(("presets", "a b")) == "$.presets['a b']"


@pytest.mark.parametrize("text, problem", [
    ('a: "x\\0y"\n', "r.yaml:1:4: $.a: contains a NUL character (\\0), which no file name or setting can hold"),
    ('"k\\0": 1\n', "r.yaml:1:1: a key contains a NUL character (\\0)"),
    ("a: .nan\n", "r.yaml:1:4: $.a: .nan is not a finite number; recipes hold no NaN or infinity"),
    ("a: [1, -.inf]\n", "r.yaml:1:8: $.a[1]: -.inf is not a finite number; recipes hold no NaN or infinity"),
    ("a: 9223372036854775808\n",
     "r.yaml:1:4: $.a: 9223372036854775808 is too large: integers are at most 2**63 - 1 (9223372036854775807)"),
    ("a: " + "9" * 5000 + "\n",
     "r.yaml:1:4: $.a: 9999999999999999999999999999999999999999... (5,000 characters) is not a number svdrender can "
     "read"),
], ids=["nul-value", "nul-key", "nan", "infinity", "int-past-64-bits", "int-of-5000-digits"])
def test_values_no_recipe_means_are_refused_at_their_line(text, problem):
    assert problems(text) == [problem]


def test_refused_values_are_kept_for_the_caller_when_it_keeps_going():
    doc = loads("a: .nan\nb: 2\n", "r.yaml", keep_going=True)
    assert doc.data == {"a": None, "b": 2} and doc.broken == {("a",)}
    assert [str(p) for p in doc.problems] == ["r.yaml:1:4: $.a: .nan is not a finite number; recipes hold no NaN or "
                                              "infinity"]


@pytest.mark.parametrize("shape", ["[", "{a: "])
def test_nesting_of_hundreds_of_levels_is_a_located_error_not_a_recursion_error(shape):
    closing = {"[": "]", "{a: ": "}"}[shape]
    assert problems("x: " + shape * 600 + "1" + closing * 600 + "\n") == [
        f"r.yaml:1:{4 + 64 * len(shape)}: nesting deeper than 64 levels"]
