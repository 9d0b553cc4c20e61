"""Property-based: random and half-written picks files thrown at `svdrender plan --picks`: exit 0 or 2, never a
traceback. Seeded and bounded (SVDRENDER_FUZZ_EXAMPLES examples, 150 by default)."""

from __future__ import annotations

import json
import os

import pytest

from renderer.picks import PICKS_KIND
from test_picks import project, svdrender  # noqa: F401 (a fixture)


hypothesis = pytest.importorskip("hypothesis")  # in the test extras; skipped only in a bare environment
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ODD = ["coffee/a/seed-1", "coffee/b/seed-3", "coffee/final/seed-2", "../x", "coffee/a/seed-1/..", "", "\x00",
       "svdrender.picks", "review", None, True, 1, 1.5, -1, 2**63, float("nan"), "a" * 200, "coffee/a/seed-01"]
scalars = st.one_of(st.sampled_from(ODD), st.text(max_size=20), st.integers(), st.floats())
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    st.dictionaries(st.sampled_from(["kind", "version", "recipe", "recipe_path", "run_id", "output_dir", "jobs",
                                     "jbos", "x"]), inner, max_size=6)), max_leaves=15)
# Mostly near-valid picks: an exported file with some of its values swapped for odd ones.
near_picks = st.fixed_dictionaries(
    {"kind": st.sampled_from([PICKS_KIND, PICKS_KIND, "svdrender.run", None]), "jobs": st.lists(scalars, max_size=6)},
    optional={"version": scalars, "recipe": scalars, "recipe_path": scalars, "run_id": scalars,
              "output_dir": scalars, "extra": scalars})


@settings(max_examples=int(os.environ.get("SVDRENDER_FUZZ_EXAMPLES", "150")), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.one_of(near_picks, documents), as_text=st.sampled_from([None, "garble"]))
def test_any_picks_file_gives_exit_0_or_2_and_no_traceback(project, document, as_text):
    picks = project / "picks.json"
    text = json.dumps(document)
    if as_text:  # cut the JSON short: every prefix of a picks file is something a crashed download leaves
        text = text[: len(text) // 2]
    picks.write_text(text, encoding="utf-8")
    result = svdrender("plan", project / "recipe.yaml", "--picks", picks, "--preset", "final")
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
