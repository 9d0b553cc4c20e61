"""The Python API: `renderer.render(recipe, **overrides)` renders a recipe file or dict like the CLI does and returns
one result per job; `import renderer` stays torch-free; examples/notebook.ipynb runs top to bottom in a real
Jupyter kernel (nbclient + ipykernel) with widget progress bars."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

import renderer
from conftest import INPUTS, REPO, TINY_RECIPE, cli_env, load_json
from renderer.errors import ModelUnavailableError, RecipeError, UsageError

NOTEBOOK = REPO / "examples" / "notebook.ipynb"


def tiny_dict(**changes) -> dict:
    recipe = {"version": 1, "model": "builtin:tiny", "output": {"dir": "out"},
              "defaults": {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 3,
                           "decode_chunk_size": 2, "seeds": [0, 1]},
              "items": [{"name": "coffee", "image": "inputs/coffee.jpg"}]}
    recipe.update(changes)
    return recipe


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One in-process render of a dict recipe (2 jobs) whose paths resolve against base_dir."""
    base = tmp_path_factory.mktemp("api")
    shutil.copytree(INPUTS, base / "inputs")
    results = renderer.render(tiny_dict(), base_dir=base, quiet=True)
    return base, results


def test_dict_recipe_renders_every_job(rendered):
    base, results = rendered
    assert [(r.id, r.status, r.error) for r in results] == [("coffee/euler/seed-0", "ok", None),
                                                            ("coffee/euler/seed-1", "ok", None)]
    first = results[0]
    assert first.paths == {"mp4": base / "out" / "coffee" / "euler" / "seed-0.mp4"}
    assert first.video == first.paths["mp4"] and first.video.stat().st_size > 0
    assert first.sidecar_path == base / "out" / "coffee" / "euler" / "seed-0.json"
    assert first.sidecar == load_json(first.sidecar_path)
    assert (first.sidecar["status"], first.sidecar["seed"], first.sidecar["settings"]["width"]) == ("ok", 0, 64)
    assert load_json(base / "out" / "manifest.json")["counts"] == {"ok": 2}
    assert (base / "out" / "index.html").is_file()
    assert not list(base.glob(".svdrender-*")), "the temporary recipe file is removed"


def test_rerun_skips_and_still_returns_paths_and_sidecars(rendered):
    base, first = rendered
    again = renderer.render(tiny_dict(), base_dir=base, quiet=True)
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert [r.sidecar for r in again] == [r.sidecar for r in first]
    assert again[1].video == base / "out" / "coffee" / "euler" / "seed-1.mp4"


def test_recipe_file_with_overrides(rendered, write_recipe, tmp_path, capsys):
    path = write_recipe(TINY_RECIPE.replace("model: builtin:tiny", "model: acme/not-cached"))
    results = renderer.render(path, model="builtin:tiny", out=tmp_path / "elsewhere", only="coffee/euler/seed-0",
                              device="cpu", force=True)
    assert [(r.id, r.status) for r in results] == [("coffee/euler/seed-0", "ok")]
    assert results[0].video == tmp_path / "elsewhere" / "coffee" / "euler" / "seed-0.mp4"
    assert results[0].sidecar["model"]["id"] == "builtin:tiny"
    assert "[1/1] coffee/euler/seed-0 ok" in capsys.readouterr().err  # not a notebook or terminal: one line a job


def test_invalid_dict_lists_every_problem_against_the_dict(tmp_path):
    shutil.copytree(INPUTS, tmp_path / "inputs")
    bad = tiny_dict(defaults={"widht": 64, "num_frames": 0})
    with pytest.raises(RecipeError) as error:
        renderer.render(bad, base_dir=tmp_path)
    assert str(error.value).splitlines() == [
        "<recipe dict>: $.defaults.num_frames: 0 is out of range: must be at least 1",
        "<recipe dict>: $.defaults.widht: unknown key 'widht'; did you mean 'width'?"]
    missing = tiny_dict(items=[{"image": "inputs/nope.png"}])
    with pytest.raises(RecipeError, match=r"^<recipe dict>: \$\.items\[0\]\.image: inputs/nope\.png"):
        renderer.render(missing, base_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"], "nothing rendered, no temporary file left"


def test_usage_errors(tmp_path, write_recipe):
    shutil.copytree(INPUTS, tmp_path / "inputs", dirs_exist_ok=True)
    with pytest.raises(UsageError, match=r"^--only 'cofee' matches no job of <recipe dict>; did you mean 'coffee'\?$"):
        renderer.render(tiny_dict(), base_dir=tmp_path, only=["cofee"])
    with pytest.raises(UsageError, match="base_dir is for dict recipes"):
        renderer.render(write_recipe(TINY_RECIPE), base_dir=tmp_path)
    with pytest.raises(TypeError, match="not set"):
        renderer.render(tiny_dict(defaults={"seeds": {1, 2}}), base_dir=tmp_path)


def test_unavailable_model_raises_one_sentence(tmp_path):
    shutil.copytree(INPUTS, tmp_path / "inputs")
    with pytest.raises(ModelUnavailableError, match="^model 'acme/not-cached' revision 'main' is not in the local "
                                                    "Hugging Face cache"):
        renderer.render(tiny_dict(model="acme/not-cached"), base_dir=tmp_path, quiet=True)


def test_import_renderer_stays_torch_free():
    code = ("import sys, renderer; renderer.render; renderer.JobOutput; "
            "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=REPO)
    assert (proc.returncode, proc.stdout) == (0, "[]\n"), proc.stderr


def test_notebook_runs_top_to_bottom(tmp_path):
    """Executed by a real ipykernel, in a copy of the repository's recipes so renders stay under tmp_path."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code_cells), "commit the notebook unexecuted"
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    nbformat.write(notebook, tmp_path / "executed.ipynb")

    outputs = [o for c in code_cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    results = " ".join(code_cells[2].outputs[-1]["data"]["text/plain"].split())
    assert results == ("[('coffee/euler/seed-0', 'ok', PosixPath('renders/notebook/coffee/euler/seed-0.mp4')), "
                       "('coffee/euler/seed-1', 'ok', PosixPath('renders/notebook/coffee/euler/seed-1.mp4'))]")
    videos = [o for o in code_cells[4].outputs if "<video" in o.get("data", {}).get("text/html", "")]
    assert len(videos) == 2 and all('src="data:video/mp4;base64,' in v["data"]["text/html"] for v in videos)
    assert "[('coffee/euler/seed-0', 'ok')]" in code_cells[5].outputs[-1]["data"]["text/plain"]
    assert code_cells[6].outputs[-1]["data"]["text/markdown"].startswith("## ✅ svdrender: notebook")
    # tqdm.auto drew progress widgets (ipywidgets), not text bars meant for a terminal.
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert (tmp_path / "renders" / "notebook" / "index.html").is_file()
    assert json.loads((tmp_path / "renders" / "notebook-demo" / "manifest.json").read_text())["counts"] == {"ok": 1}


def test_render_from_a_worker_thread(tmp_path):
    """Signal handlers can only be installed from the main thread; a render started elsewhere must still work."""
    import threading

    shutil.copytree(INPUTS, tmp_path / "inputs")
    (tmp_path / "r.yaml").write_text(TINY_RECIPE)
    found = {}
    worker = threading.Thread(target=lambda: found.update(results=renderer.render(tmp_path / "r.yaml")))
    worker.start()
    worker.join(timeout=300)
    assert [r.status for r in found["results"]] == ["ok"]
