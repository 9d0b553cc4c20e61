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
