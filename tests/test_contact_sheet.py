"""The contact sheet in a real headless Chromium: it loads from disk with no console errors and no request outside
the output folder, every video decodes at its rendered size, failures show their (escaped) errors, filters work,
and a screenshot is taken."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from chromium import Chromium, Page
from conftest import INPUTS, TINY_RECIPE, cli_env, load_json, run_cli

HOSTILE_ERROR = 'RuntimeError: </script><script>window.pwned = 1</script> & "quotes"\nsecond line'

# Resolves once every <video> has decoded a frame (or after 15 s) with what each one reports.
VIDEO_STATE = """
new Promise(function (resolve) {
  var started = Date.now();
  (function poll() {
    var videos = Array.prototype.slice.call(document.querySelectorAll('video'));
    var done = videos.every(function (v) { return v.getVideoPlaybackQuality().totalVideoFrames > 0 || v.error; });
    if (!done && Date.now() - started < 15000) { setTimeout(poll, 50); return; }
    resolve(videos.map(function (v) {
      return {job: v.closest('article').id, src: v.currentSrc, readyState: v.readyState, duration: v.duration,
              width: v.videoWidth, height: v.videoHeight, decoded: v.getVideoPlaybackQuality().totalVideoFrames,
              muted: v.muted, loop: v.loop, autoplay: v.autoplay};
    }));
  })();
})
"""


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    """One tiny real render (3 jobs, mp4 + webm), plus a failed and an interrupted sidecar as such runs leave them."""
    root = tmp_path_factory.mktemp("contact-sheet")
    shutil.copytree(INPUTS, root / "inputs")
    recipe = root / "recipe.yaml"
    # Not in alphabetical order, so the page shows that it keeps the recipe's.
    recipe.write_text(TINY_RECIPE.replace("output: {dir: out}", "output: {dir: out, formats: [mp4, webm]}")
                      .replace("  - name: coffee\n", "  - name: rocket\n    image: inputs/rocket.jpg\n"
                                                      "  - name: coffee\n")
                      .replace("image: inputs/coffee.jpg", "image: inputs/coffee.jpg\n    presets: [euler, ays]"),
                      encoding="utf-8")
    proc = run_cli(recipe, env=cli_env(HF_HOME=str(root / "hf-home")))
    assert proc.returncode == 0, proc.stderr
    out = root / "out"
    assert (out / "index.html").is_file(), "a render writes the contact sheet"
    template = load_json(out / "rocket" / "euler" / "seed-0.json")
    for seed, status, error in ((1, "failed", HOSTILE_ERROR), (2, "interrupted", "interrupted by SIGTERM")):
        record = dict(template, job_id=f"rocket/euler/seed-{seed}", seed=seed, status=status, error=error, files=[],
                      frames_sha256=None, frame_count=None, scheduler=None, timings={"total": 0.5})
        (out / "rocket" / "euler" / f"seed-{seed}.json").write_text(json.dumps(record), encoding="utf-8")
    # A browser that cannot play the mp4 (here: a damaged one) falls back to the webm <source>.
    (out / "coffee" / "ays" / "seed-0.mp4").write_bytes(b"not a video")
    report = run_cli("report", out)
    assert report.returncode == 1, report.stderr  # the folder now holds a failed and an interrupted job
    assert report.stdout.strip() == f"{out / 'manifest.json'}: 5 jobs; contact sheet: {out / 'index.html'}"
    return out


@pytest.fixture(scope="module")
def page(out_dir, tmp_path_factory):
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        tab = Page(browser)
        tab.open((out_dir / "index.html").as_uri())
        yield tab
    finally:
        browser.close()


def test_page_loads_from_disk_without_errors_or_outside_requests(page, out_dir):
    page.evaluate(VIDEO_STATE)
    assert page.problems() == []
    urls = page.requested_urls()
    assert urls and all(u.startswith(out_dir.as_uri() + "/") for u in urls), urls
    assert page.evaluate("document.title") == "recipe · svdrender contact sheet"


def test_every_video_decodes_at_its_rendered_size(page, out_dir):
    videos = page.evaluate(VIDEO_STATE)
    manifest = load_json(out_dir / "manifest.json")
    ok_jobs = {j["job_id"]: j for j in manifest["jobs"] if j["status"] == "ok"}
    assert sorted(v["job"] for v in videos) == sorted(ok_jobs) == [
        "coffee/ays/seed-0", "coffee/euler/seed-0", "rocket/euler/seed-0"]
    for video in videos:
        job = ok_jobs[video["job"]]
        # Debian's Chromium decodes H.264, so it plays the mp4 (the first <source>) like desktop browsers do.
        extension = "webm" if video["job"] == "coffee/ays/seed-0" else "mp4"
        assert video["src"] == (out_dir / f"{video['job']}.{extension}").as_uri()
        assert video["readyState"] >= 2 and video["decoded"] > 0, video
        assert video["duration"] == pytest.approx(job["frame_count"] / job["fps"], abs=0.05)
        assert (video["width"], video["height"]) == (job["width"], job["height"]) == (64, 64)
        assert video["muted"] and video["loop"] and video["autoplay"]


def test_failed_and_interrupted_jobs_are_marked_with_their_errors(page):
    cards = page.evaluate("""Array.prototype.map.call(document.querySelectorAll('article.job'), function (a) {
        var error = a.querySelector('pre.error');
        return {id: a.id, status: a.dataset.status, cls: a.className, badge: a.querySelector('.badge').textContent,
                error: error && error.textContent, video: !!a.querySelector('video')};
    })""")
    by_id = {c["id"]: c for c in cards}
    assert len(cards) == 5
    failed = by_id["rocket/euler/seed-1"]
    assert (failed["status"], failed["badge"], failed["cls"], failed["video"]) == (
        "failed", "FAILED", "job status-failed", False)
    assert failed["error"] == HOSTILE_ERROR
    interrupted = by_id["rocket/euler/seed-2"]
    assert (interrupted["badge"], interrupted["error"]) == ("INTERRUPTED", "interrupted by SIGTERM")
    assert page.evaluate("window.pwned === undefined && document.scripts.length === 1")


def test_filters_show_one_item_preset_or_status(page):
    def choose(item="", preset="", status=""):
        return page.evaluate(f"""(function () {{
            var form = document.getElementById('filters');
            form.item.value = {json.dumps(item)}; form.preset.value = {json.dumps(preset)};
            form.status.value = {json.dumps(status)};
            form.dispatchEvent(new Event('change'));
            return {{shown: Array.prototype.filter.call(document.querySelectorAll('article.job'),
                                                       function (a) {{ return !a.hidden; }}).map(function (a) {{
                                                       return a.id; }}),
                     sections: Array.prototype.filter.call(document.querySelectorAll('section.item'),
                                                          function (s) {{ return !s.hidden; }}).length,
                     label: document.getElementById('shown').textContent, hash: location.hash}};
        }})()""")

    assert choose(item="coffee") == {"shown": ["coffee/euler/seed-0", "coffee/ays/seed-0"], "sections": 1,
                                     "label": "2 of 5 jobs shown", "hash": "#item=coffee"}
    assert choose(preset="euler")["shown"] == ["rocket/euler/seed-0", "rocket/euler/seed-1", "rocket/euler/seed-2",
                                               "coffee/euler/seed-0"]
    assert choose(status="failed")["shown"] == ["rocket/euler/seed-1"]
    assert choose(item="coffee", status="failed")["label"] == "0 of 5 jobs shown"
    assert choose()["label"] == "5 of 5 jobs shown"
    assert page.problems() == []


def test_items_and_presets_in_recipe_order_each_with_its_input_image(page, out_dir):
    page.evaluate(VIDEO_STATE)
    sections = page.evaluate("""Array.prototype.map.call(document.querySelectorAll('section.item'), function (s) {
        var img = s.querySelector('h2 img.input');
        return {item: s.dataset.item, input: img && img.getAttribute('src'),
                shown: !!img && img.complete && img.naturalWidth > 0,
                jobs: Array.prototype.map.call(s.querySelectorAll('article.job'), function (a) { return a.id; })};
    })""")
    assert sections == [
        {"item": "rocket", "input": "rocket/input.jpg", "shown": True,
         "jobs": ["rocket/euler/seed-0", "rocket/euler/seed-1", "rocket/euler/seed-2"]},
        {"item": "coffee", "input": "coffee/input.jpg", "shown": True,
         "jobs": ["coffee/euler/seed-0", "coffee/ays/seed-0"]}]
    for item in ("rocket", "coffee"):
        assert (out_dir / item / "input.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG in the output folder


def test_screenshot(page, tmp_path_factory):
    page.evaluate(VIDEO_STATE)
    shot = page.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path = tmp_path_factory.mktemp("screenshots") / "contact_sheet.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def test_sidecar_text_is_escaped_not_markup(out_dir):
    page = (out_dir / "index.html").read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    # The only images are the two items' input thumbnails: none comes from a sidecar's text.
    assert parser.tags.count("script") == 1 and parser.tags.count("img") == 2
    assert "&lt;/script&gt;&lt;script&gt;window.pwned = 1&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "http://" not in page and "https://" not in page
