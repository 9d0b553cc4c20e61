"""The contact sheet's compare view and picks, in a real headless Chromium, on one real render: the grid lays out
presets × seeds beside the input image, every video follows one clock (play, seek, frame steps), two picks survive
a reload and download as picks.json, and svdrender renders exactly those picks, or their items and seeds under
another preset, from that file."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from chromium import Chromium, Page
from conftest import INPUTS, REPO, cli_env, load_json, run_cli
from test_cli import ffprobe

HOSTILE_ERROR = 'RuntimeError: </pre><img src=x onerror="window.pwned=1"> & "quotes"'
HOSTILE_DESCRIPTION = '<script>window.pwned = 2</script>'
FPS = 4
RECIPE = f"""\
version: 1
name: review
model: builtin:tiny
output: {{dir: out}}
defaults:
  presets: [a, b]
  seeds: [1, 2, 3]
  width: 64
  height: 64
  num_frames: 8
  fps: {FPS}
  num_inference_steps: 2
  decode_chunk_size: 4
presets:
  a: {{scheduler: euler}}
  b: {{scheduler: euler, num_frames: 6}}   # shorter: it holds its last frame while a plays on
  final: {{scheduler: euler, num_inference_steps: 3}}
items:
  - name: coffee
    image: inputs/coffee.jpg
"""

# Resolves when every video of the compare grid can show a frame (or after 15 s).
GRID_READY = """
new Promise(function (resolve) {
  var started = Date.now();
  (function poll() {
    var videos = Array.prototype.slice.call(document.querySelectorAll('#compare-grid video'));
    if (videos.length && videos.every(function (v) { return v.readyState >= 2 && !v.seeking; }) ||
        Date.now() - started > 15000) { resolve(videos.length); return; }
    setTimeout(poll, 20);
  })();
})
"""
# Every video of the grid: its job, time, whether it plays, and the frame counter shown under it.
CLIPS = """Array.prototype.map.call(document.querySelectorAll('#compare-grid video'), function (v) {
  var cell = v.closest('.cell');
  return {job: cell.dataset.job, t: v.currentTime, paused: v.paused, counter: cell.querySelector('.frame').textContent};
})"""


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    """One real render of 6 jobs (presets a and b × seeds 1-3; b's videos are shorter), plus a failed job whose
    error and description are hostile markup, as a merged shard might bring."""
    import renderer
    from renderer.report import rebuild

    root = tmp_path_factory.mktemp("review")
    (root / "inputs").mkdir()
    shutil.copy(INPUTS / "coffee.jpg", root / "inputs")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    assert [r.status for r in renderer.render(recipe, quiet=True)] == ["ok"] * 6
    out = root / "out"
    record = load_json(out / "coffee" / "b" / "seed-1.json")
    record.update(job_id="coffee/b/seed-9", seed=9, status="failed", error=HOSTILE_ERROR, files=[], frame_count=None,
                  frames_sha256=None, scheduler=None, timings={"total": 0.5},
                  preset_spec={**record["preset_spec"], "description": HOSTILE_DESCRIPTION})
    (out / "coffee" / "b" / "seed-9.json").write_text(json.dumps(record), encoding="utf-8")
    rebuild(out)
    return recipe, out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def downloads(browser, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("downloads")
    browser.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder),
                                                 "eventsEnabled": True})
    return folder


@pytest.fixture(scope="module")
def page(browser, downloads):
    return Page(browser)


def open_page(page: Page, out: Path, view: str = "") -> None:
    page.open("about:blank")  # a new load even when only the #hash would change
    page.open((out / "index.html").as_uri() + view)
    if view.startswith("#compare="):
        assert page.evaluate(GRID_READY) > 0


def press(page: Page, key: str, code: str, vk: int, text: str | None = None) -> None:
    """A key pressed and released, as a keyboard sends it."""
    down = {"type": "keyDown" if text else "rawKeyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk}
    page.send("Input.dispatchKeyEvent", {**down, **({"text": text} if text else {})})
    page.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": vk})


SPACE = (" ", "Space", 32, " ")
RIGHT = ("ArrowRight", "ArrowRight", 39)
LEFT = ("ArrowLeft", "ArrowLeft", 37)


def settle(page: Page) -> list[dict]:
    """The grid's videos once none is seeking."""
    page.evaluate(GRID_READY)
    return page.evaluate(CLIPS)


def test_compare_view_lays_out_presets_by_seeds_beside_the_input_image(page, review):
    recipe, out = review
    open_page(page, out, "#compare=coffee")
    grid = page.evaluate("""Array.prototype.map.call(document.getElementById('compare-grid').children, function (c) {
        if (c.classList.contains('head')) { return c.firstChild ? c.firstChild.textContent : ''; }
        if (c.classList.contains('none')) { return '-'; }
        var error = c.querySelector('pre.error');
        return c.dataset.job + (c.querySelector('video') ? '' : ' ' + c.querySelector('.badge').textContent) +
               (error ? ': ' + error.textContent : '');
    })""")
    assert grid == ["", "seed 1", "seed 2", "seed 3", "seed 9",
                    "a", "coffee/a/seed-1", "coffee/a/seed-2", "coffee/a/seed-3", "-",
                    "b", "coffee/b/seed-1", "coffee/b/seed-2", "coffee/b/seed-3",
                    f"coffee/b/seed-9 FAILED: {HOSTILE_ERROR}"]
    source = page.evaluate("""(function () { var img = document.querySelector('#compare-input img');
        return [img.getAttribute('src'), img.complete && img.naturalWidth > 0,
                document.querySelector('#compare-input figcaption').textContent]; })()""")
    assert source == ["coffee/input.jpg", True, "input: inputs/coffee.jpg"]
    press(page, "l", "KeyL", 76, "l")  # presets in columns
    heads = page.evaluate("Array.prototype.map.call(document.querySelectorAll('#compare-grid .head'), "
                          "function (h) { return h.firstChild ? h.firstChild.textContent : ''; })")
    assert heads == ["", "a", "b", "seed 1", "seed 2", "seed 3", "seed 9"]
    assert page.evaluate("location.hash") == "#compare=coffee&layout=columns"
    shortcuts = page.evaluate("document.querySelector('.shortcuts').textContent")
    for key in ("Space", "←", "→", "Home", "End", "1–9", "[", "]", "L", "Esc"):
        assert key in shortcuts
    # Sidecar text stays text: no script ran, no element came from it.
    assert page.evaluate("window.pwned === undefined && document.scripts.length === 1 && "
                         "document.querySelectorAll('img').length === 2")
    assert page.problems() == []
    assert all(u.startswith(out.as_uri() + "/") or u in ("about:blank",) for u in page.requested_urls())


def test_play_then_seek_keeps_every_video_within_one_frame(page, review):
    open_page(page, review[1], "#compare=coffee")
    press(page, *SPACE)
    page.evaluate("""new Promise(function (resolve) {
        (function poll() { var v = document.querySelector('#compare-grid video');
                           if (v.currentTime > 0.3) { resolve(); } else { setTimeout(poll, 20); } })();
    })""")
    page.evaluate("(function () { var s = document.getElementById('scrub'); s.value = '0.6'; "
                  "s.dispatchEvent(new Event('input')); })()")
    playing = settle(page)
    assert len(playing) == 6 and not any(c["paused"] for c in playing)
    times = [c["t"] for c in playing]
    assert max(times) - min(times) <= 1 / FPS, playing
    press(page, *SPACE)
    paused = settle(page)
    assert all(c["paused"] for c in paused)
    assert max(c["t"] for c in paused) - min(c["t"] for c in paused) <= 1 / FPS, paused
    # Past the end of b's 6 frames: a goes on, b holds its last frame.
    page.evaluate("(function () { var s = document.getElementById('scrub'); s.value = '1.7'; "
                  "s.dispatchEvent(new Event('input')); })()")
    held = {c["job"]: (round(c["t"], 3), c["counter"]) for c in settle(page)}
    assert held == {**{f"coffee/a/seed-{s}": (1.7, "7/8") for s in (1, 2, 3)},
                    **{f"coffee/b/seed-{s}": (1.375, "6/6") for s in (1, 2, 3)}}


def test_frame_steps_move_every_video_by_one_frame(page, review):
    open_page(page, review[1], "#compare=coffee")
    assert {c["counter"] for c in settle(page)} == {"1/8", "1/6"}
    for key, frame in ((RIGHT, 2), (RIGHT, 3), (LEFT, 2)):
        # The frame each video presents after the step, as the decoder reports it (its media time).
        page.evaluate("""window.presented = Array.prototype.map.call(document.querySelectorAll('#compare-grid video'),
            function (v) { return new Promise(function (r) { v.requestVideoFrameCallback(function (now, m) {
                r(m.mediaTime); }); }); }); 1""")
        press(page, *key)
        clips = settle(page)
        assert {c["t"] for c in clips} == {(frame - 0.5) / FPS}
        assert {c["counter"] for c in clips} == {f"{frame}/8", f"{frame}/6"}
        assert page.evaluate("Promise.all(window.presented)") == [(frame - 1) / FPS] * 6
        assert page.evaluate("document.getElementById('clock').textContent") == (
            f"frame {frame} / 8 · {(frame - 0.5) / FPS:.3f} s / 2.000 s")


@pytest.fixture(scope="module")
def picked(page, review, browser, downloads):
    """Two of six jobs picked (one by its number key in the compare view, one by its button on the sheet), the page
    reloaded, and picks.json downloaded through the page's link."""
    out = review[1]
    open_page(page, out, "#compare=coffee")
    page.evaluate("document.getElementById('picks-clear').click(); 1")
    press(page, "1", "Digit1", 49, "1")  # the first video: coffee/a/seed-1
    open_page(page, out)
    page.evaluate("document.querySelector('article[id=\"coffee/b/seed-3\"] button.pick').click(); 1")
    page.send("Page.reload")
    browser.wait_for("Page.loadEventFired")
    kept = page.evaluate("Array.prototype.map.call(document.querySelectorAll('button.pick[aria-pressed=true]'), "
                         "function (b) { return b.dataset.job; })")
    shown = page.evaluate("document.getElementById('picks-text').value")
    page.evaluate("document.getElementById('picks-download').click(); 1")
    begun = browser.wait_for("Browser.downloadWillBegin")["params"]
    while (progress := browser.wait_for("Browser.downloadProgress")["params"])["state"] == "inProgress":
        pass
    assert progress["state"] == "completed" and begun["suggestedFilename"] == "picks.json"
    return {"kept": kept, "shown": shown, "file": Path(progress["filePath"]), "problems": page.problems()}


def test_two_picks_survive_a_reload_and_download_as_picks_json(picked, review):
    recipe, out = review
    assert picked["kept"] == ["coffee/a/seed-1", "coffee/b/seed-3"]
    document = json.loads(picked["file"].read_text(encoding="utf-8"))
    assert document == json.loads(picked["shown"]) == {
        "kind": "svdrender.picks", "version": 1, "recipe": "review", "recipe_path": str(recipe),
        "run_id": load_json(out / "manifest.json")["run"]["run_id"], "output_dir": str(out),
        "jobs": ["coffee/a/seed-1", "coffee/b/seed-3"]}
    jsonschema.Draft202012Validator(load_json(REPO / "schemas" / "picks.schema.json")).validate(document)
    assert picked["problems"] == []


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_svdrender_renders_exactly_the_picked_jobs(picked, review, tmp_path):
    recipe, out = review
    fresh = tmp_path / "fresh"
    # One torch thread, as the review render had: the tiny model's frames depend on the thread count (sums in
    # another order), and the same job must give the same pixels.
    proc = run_cli(recipe, "--picks", picked["file"], "--out", fresh, env=cli_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    sidecars = sorted(fresh.glob("*/*/seed-*.json"))
    assert [str(p.relative_to(fresh).with_suffix("")) for p in sidecars] == ["coffee/a/seed-1", "coffee/b/seed-3"]
    for path, frames in zip(sidecars, (8, 6)):
        again, first = load_json(path), load_json(out / path.relative_to(fresh))
        assert again["status"] == "ok" and again["frames_sha256"] == first["frames_sha256"]  # the same pixels
        assert ffprobe(path.with_suffix(".mp4"))["nb_read_frames"] == str(frames)
    assert [j["job_id"] for j in load_json(fresh / "manifest.json")["run"]["jobs"]] == [
        "coffee/a/seed-1", "coffee/b/seed-3"]


def test_picks_under_another_preset_render_beside_the_picked_jobs(picked, review, page, tmp_path):
    import renderer

    recipe, out = review
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = {p: _sha256(p) for p in copy.rglob("*") if p.is_file() and p.name not in ("manifest.json", "index.html")}
    results = renderer.render(recipe, out=copy, picks=picked["file"], preset="final", quiet=True)
    assert [(r.id, r.status) for r in results] == [("coffee/final/seed-1", "ok"), ("coffee/final/seed-3", "ok")]
    for result in results:
        assert result.sidecar["settings"]["num_inference_steps"] == 3
        assert ffprobe(result.video)["nb_read_frames"] == "8"
    assert {p: _sha256(p) for p in before} == before  # the picked drafts and every other job stay as they were
    open_page(page, copy, "#compare=coffee")
    grid = page.evaluate("""Array.prototype.map.call(document.getElementById('compare-grid').children,
        function (c) { return c.classList.contains('head') ? (c.firstChild ? c.firstChild.textContent : '') :
                       c.dataset.job || '-'; })""")
    # The last run's preset comes first: final's picked seeds 1 and 3, then the drafts, as before.
    assert grid[:10] == ["", "seed 1", "seed 2", "seed 3", "seed 9",
                         "final", "coffee/final/seed-1", "-", "coffee/final/seed-3", "-"]
    assert grid[10:] == ["a", "coffee/a/seed-1", "coffee/a/seed-2", "coffee/a/seed-3", "-",
                         "b", "coffee/b/seed-1", "coffee/b/seed-2", "coffee/b/seed-3", "coffee/b/seed-9"]


def test_screenshot_of_the_compare_view(page, review, picked, tmp_path_factory):
    open_page(page, review[1], "#compare=coffee")
    press(page, *RIGHT)
    settle(page)
    shot = page.send("Page.captureScreenshot", {"format": "png"})
    path = tmp_path_factory.mktemp("screenshots") / "review-page.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert page.evaluate("document.querySelectorAll('#compare-grid button.pick[aria-pressed=true]').length") == 2
