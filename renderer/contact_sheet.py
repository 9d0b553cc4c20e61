"""The contact sheet: `<out>/index.html`, one static page showing every job's video, settings, timings and status.

It is rebuilt from the job sidecars with the run manifest, so it is always as current as they are. The page is
self-contained (inline CSS and JS, no fonts, scripts or images from elsewhere) and refers to the videos by relative
links, so the output folder can be opened from disk, zipped, or uploaded as a CI artifact and still work. Every
text that comes from a sidecar (item names, errors, settings) is HTML-escaped: sidecars of merged shards are data,
not markup.
"""

from __future__ import annotations

import html
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import __version__
from .formats import FORMATS
from .layout import INDEX_NAME, INPUT_THUMBNAIL_NAME
from .outputs import write_bytes_atomic
from .records import NOT_RUN, Entry, Manifest

GENERATOR = "svdrender"

STATUS_LABELS = {"ok": "ok", "failed": "FAILED", "interrupted": "INTERRUPTED", NOT_RUN: "NOT RUN"}
SETTING_LABELS = (("width", "width"), ("height", "height"), ("num_frames", "frames"), ("fps", "fps"),
                  ("num_inference_steps", "steps"), ("motion_bucket_id", "motion bucket"),
                  ("noise_aug_strength", "noise aug"), ("min_guidance_scale", "min guidance"),
                  ("max_guidance_scale", "max guidance"), ("decode_chunk_size", "decode chunk"), ("fit", "fit"),
                  ("loop", "loop"), ("crossfade_frames", "crossfade frames"), ("interpolation", "interpolation"),
                  ("output_fps", "output fps"))
TIMING_ORDER = ("load", "prepare", "denoise", "decode", "postprocess", "encode")

STYLE = """
:root { color-scheme: light dark; --fg: #1d1d1f; --muted: #6b6b70; --bg: #f5f5f7; --card: #fff; --line: #d8d8dc;
  --ok: #1a7f37; --bad: #c62828; --warn: #b26a00; }
@media (prefers-color-scheme: dark) { :root { --fg: #ececef; --muted: #a0a0a8; --bg: #161618; --card: #222226;
  --line: #3a3a40; --ok: #57c26f; --bad: #ff6b6b; --warn: #f0a53a; } }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); }
header.top { position: sticky; top: 0; z-index: 1; padding: 12px 20px; background: var(--card);
  border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 20px; }
h2 { margin: 0 0 8px; font-size: 17px; }
.muted, small { color: var(--muted); font-weight: normal; }
.meta { margin: 0 0 8px; }
.count-failed, .count-interrupted { font-weight: 600; }
.count-failed { color: var(--bad); } .count-interrupted { color: var(--warn); } .count-ok { color: var(--ok); }
form.filters { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; }
form.filters select { font: inherit; margin-left: 4px; }
main { padding: 16px 20px 40px; }
section.item { margin-bottom: 28px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
article.job { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px;
  display: flex; flex-direction: column; gap: 6px; min-width: 0; }
article.job.status-failed { border: 2px solid var(--bad); }
article.job.status-interrupted { border: 2px dashed var(--warn); }
.media { width: 100%; background: #000; border-radius: 4px; overflow: hidden; display: flex;
  align-items: center; justify-content: center; }
.media video, .media img { width: 100%; height: 100%; object-fit: contain; display: block; }
.media.empty { color: #ddd; font-weight: 600; letter-spacing: .05em; }
.title { display: flex; justify-content: space-between; gap: 8px; align-items: baseline; }
.title > div { min-width: 0; }  /* lets the one-line description shrink (ellipsis) instead of widening the card */
.title small { display: block; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.badge { flex-shrink: 0; font-size: 11px; font-weight: 700; padding: 1px 6px; border-radius: 10px; color: #fff; }
.badge.ok { background: var(--ok); } .badge.failed { background: var(--bad); }
.badge.interrupted { background: var(--warn); } .badge.other { background: var(--muted); }
.run-problem { margin: 0 0 8px; padding: 6px 8px; border-radius: 4px; color: #fff; background: var(--bad);
  font-weight: 600; }
img.input { height: 48px; width: auto; vertical-align: middle; border-radius: 4px; margin-right: 8px; }
pre.error { margin: 0; padding: 6px; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px;
  color: var(--bad); background: color-mix(in srgb, var(--bad) 10%, transparent); border-radius: 4px; }
.facts, .timings { margin: 0; font-size: 12px; }
details table { border-collapse: collapse; font-size: 12px; width: 100%; }
details td { border-top: 1px solid var(--line); padding: 2px 4px; vertical-align: top; overflow-wrap: anywhere; }
details td:first-child { color: var(--muted); white-space: nowrap; }
"""

# Filters show and hide jobs by their data-* attributes; the choice is kept in the URL (#item=x&status=failed) so
# a link can point at, say, the failures of one item.
SCRIPT = """
(function () {
  var form = document.getElementById('filters');
  var selects = Array.prototype.slice.call(form.querySelectorAll('select'));
  var jobs = Array.prototype.slice.call(document.querySelectorAll('article.job'));
  var shown = document.getElementById('shown');
  var start = new URLSearchParams(location.hash.slice(1));
  selects.forEach(function (s) {
    var wanted = start.get(s.name);
    if (wanted !== null && Array.prototype.some.call(s.options, function (o) { return o.value === wanted; })) {
      s.value = wanted;
    }
  });
  function apply() {
    var count = 0;
    var params = new URLSearchParams();
    selects.forEach(function (s) { if (s.value) { params.set(s.name, s.value); } });
    jobs.forEach(function (job) {
      var match = selects.every(function (s) { return !s.value || job.getAttribute('data-' + s.name) === s.value; });
      job.hidden = !match;
      if (match) { count += 1; }
    });
    document.querySelectorAll('section.item').forEach(function (group) {
      group.hidden = !group.querySelector('article.job:not([hidden])');
    });
    shown.textContent = count + ' of ' + jobs.length + ' jobs shown';
    var hash = params.toString();
    if (hash !== location.hash.slice(1)) { history.replaceState(null, '', hash ? '#' + hash : location.pathname); }
  }
  form.addEventListener('change', apply);
  apply();
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(*parts: Path | str) -> str:
    """A relative URL from path segments, each percent-encoded, ready for an attribute."""
    return _e("/".join(quote(p, safe="") for part in parts for p in Path(part).parts))


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _media(entry: Entry, out_dir: Path) -> str:
    """The job's video (or animation, or first frame), or a placeholder saying why there is none."""
    sidecar = entry.sidecar if entry.status != NOT_RUN else None
    files: dict[str, list[str]] = {}
    folder = Path(entry.item) / entry.preset
    for file in sidecar.files if sidecar is not None else ():
        files.setdefault(file.format, []).append(file.path)
    present = {fmt: [p for p in paths if (out_dir / folder / p).is_file()] for fmt, paths in files.items()}
    width, height = (sidecar.width, sidecar.height) if sidecar is not None else (16, 9)
    box = f'style="aspect-ratio: {int(width)} / {int(height)}"'
    sources = [(present[fmt][0], f.mime) for fmt, f in FORMATS.items() if f.shown_as == "video" and present.get(fmt)]
    if sources:
        inner = "".join(f'<source src="{_href(folder, path)}" type="{mime}">' for path, mime in sources)
        return (f'<div class="media" {box}><video muted loop autoplay playsinline preload="auto" width="{int(width)}" '
                f'height="{int(height)}" title="{_e(entry.job_id)}">{inner}</video></div>')
    for fmt in (fmt for fmt, f in FORMATS.items() if f.shown_as == "img"):
        if present.get(fmt):
            path = sorted(present[fmt])[0]
            return (f'<div class="media" {box}><img src="{_href(folder, path)}" alt="{_e(entry.job_id)}" '
                    f'width="{int(width)}" height="{int(height)}"></div>')
    reason = "files missing" if files and entry.status == "ok" else (STATUS_LABELS.get(entry.status) or "no video")
    return f'<div class="media empty" {box}>{_e(reason)}</div>'


def _settings_facts(entry: Entry) -> str:
    s = entry.sidecar.settings if entry.sidecar is not None else {}
    if not s:
        return ""
    frames = f"{s.get('num_frames')} frames @ {s.get('fps')} fps"
    written = (entry.sidecar.frame_count, entry.sidecar.fps)
    if written[0] is not None and written != (s.get("num_frames"), s.get("fps")):  # looped or retimed
        how = [s[k] for k in ("loop", "interpolation") if s.get(k) not in (None, "none")]
        frames += f" → {' + '.join(how) + ' → ' if how else ''}{written[0]} frames @ {written[1]} fps"
    parts = [f"{s.get('width')}×{s.get('height')}", frames,
             f"{s.get('num_inference_steps')} steps", f"motion {s.get('motion_bucket_id')}",
             f"noise {_number(s.get('noise_aug_strength'))}",
             f"cfg {_number(s.get('min_guidance_scale'))}→{_number(s.get('max_guidance_scale'))}"]
    return f'<p class="facts">{_e(" · ".join(parts))}</p>'


def _timings(entry: Entry) -> str:
    t = entry.sidecar.timings if entry.sidecar is not None and entry.status != NOT_RUN else {}
    if "total" not in t:
        return ""
    parts = [f"total {t['total']:.1f} s"] + [f"{k} {t[k]:.2f}" for k in TIMING_ORDER if isinstance(t.get(k),
                                                                                                      (int, float))]
    return f'<p class="timings muted">{_e(" · ".join(parts))}</p>'


def _details(entry: Entry) -> str:
    if entry.sidecar is None:
        return ""
    job = entry.sidecar
    rows: list[tuple[str, Any]] = []
    settings = job.settings
    rows += [(label, settings[key]) for key, label in SETTING_LABELS if key in settings]
    spec = job.preset_spec
    scheduler = job.scheduler or {}
    rows.append(("scheduler", scheduler.get("class") or spec.get("scheduler")))
    sigmas = spec.get("sigmas")
    if sigmas is not None:
        rows.append(("sigma schedule", sigmas if isinstance(sigmas, str) else f"custom ({len(sigmas)} sigmas)"))
    model = job.model
    revision = model.get("resolved_revision") or model.get("requested_revision")
    rows.append(("model", f"{model.get('id')}" + (f" @ {revision}" if revision else "")))
    rows += [(key, model[key]) for key in ("dtype", "device") if model.get(key)]
    rows.append(("input", job.input_path))
    if job.frames_sha256:
        rows.append(("frames sha256", job.frames_sha256[:16] + "…"))
    rows.append(("finished", job.finished))
    cells = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_number(v))}</td></tr>" for k, v in rows if v is not None)
    return f"<details><summary>settings</summary><table>{cells}</table></details>"


def _card(entry: Entry, out_dir: Path) -> str:
    status = entry.status
    badge = status.replace(" ", "-") if status in STATUS_LABELS else "other"
    description = entry.sidecar.preset_spec.get("description") if entry.sidecar is not None else None
    return (
        f'<article class="job status-{_e(badge)}" id="{_e(entry.job_id)}" data-item="{_e(entry.item)}" '
        f'data-preset="{_e(entry.preset)}" data-status="{_e(status)}">{_media(entry, out_dir)}'
        f'<div class="title"><div><strong>{_e(entry.preset)} · seed {_e(entry.seed)}</strong>'
        + (f"<small>{_e(description)}</small>" if description else "")
        + f'</div><span class="badge {_e(badge)}">{_e(STATUS_LABELS.get(status, status))}</span></div>'
        + (f'<pre class="error">{_e(entry.error)}</pre>' if entry.error and status != "ok" else "")
        + _settings_facts(entry) + _timings(entry) + _details(entry) + "</article>"
    )


def _select(name: str, label: str, values: list[str], counts: dict[str, int]) -> str:
    options = f'<option value="">all ({sum(counts.values())})</option>' + "".join(
        f'<option value="{_e(v)}">{_e(v)} ({counts[v]})</option>' for v in values)
    return f'<label>{_e(label)}<select name="{_e(name)}">{options}</select></label>'


def render_contact_sheet(manifest: Manifest, out_dir: Path) -> str:
    """The contact sheet HTML for a run manifest whose videos live under `out_dir`: items and presets in the order
    the run planned them (recipe order), each item with its input image."""
    entries = list(manifest.entries)
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.item, []).append(entry)
    title = manifest.name

    def tally(values: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for value in values:
            counts[value] = counts.get(value, 0) + 1
        return counts

    statuses = tally([e.status for e in entries])
    presets = list(dict.fromkeys(e.preset for e in entries))
    models = sorted({str(e.sidecar.model.get("id")) for e in entries if e.sidecar is not None})
    counts = " · ".join(f'<span class="count-{_e(s.replace(" ", "-"))}">{n} {_e(s)}</span>'
                        for s, n in sorted(statuses.items()))
    meta = (f"{len(entries)} jobs" + (f": {counts}" if counts else "")
            + (f" · model {_e(', '.join(models))}" if models else "")
            + f" · updated {_e(manifest.updated)}"
            + ' · <a href="manifest.json">manifest.json</a>')
    run = manifest.run
    problem = (f'<p class="run-problem">Run {_e(run.outcome)}' + (f": {_e(run.error)}" if run.error else "")
               + "</p>") if run is not None and run.outcome != "ok" else ""
    sections = []
    for item, item_jobs in groups.items():
        sources = [e.sidecar.input_path for e in item_jobs if e.sidecar is not None]
        thumbnail = ""
        if (out_dir / item / INPUT_THUMBNAIL_NAME).is_file():
            thumbnail = (f'<img class="input" src="{_href(item, INPUT_THUMBNAIL_NAME)}" '
                         f'alt="input image of {_e(item)}">')
        # Presets in the order the run has them, then seeds in the order planned: the grid is item x preset x seed.
        ordered = sorted(item_jobs, key=lambda e: presets.index(e.preset))
        cards = "".join(_card(e, out_dir) for e in ordered)
        sections.append(f'<section class="item" data-item="{_e(item)}"><h2>{thumbnail}{_e(item)}'
                        + (f" <small>{_e(sources[0])}</small>" if sources else "")
                        + f'</h2><div class="cards">{cards}</div></section>')
    body = "".join(sections) or '<p class="muted">No jobs have been rendered into this folder yet.</p>'
    filters = (_select("item", "Item", list(groups), tally([e.item for e in entries]))
               + _select("preset", "Preset", presets, tally([e.preset for e in entries]))
               + _select("status", "Status", sorted(statuses), statuses) + '<output id="shown"></output>')
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="{GENERATOR} {_e(__version__)}">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)} · svdrender contact sheet</title><style>{STYLE}</style></head>\n"
        f'<body><header class="top"><h1>{_e(title)}</h1>{problem}<p class="meta">{meta}</p>'
        f'<form class="filters" id="filters">{filters}</form></header>\n'
        f"<main>{body}</main>\n<script>{SCRIPT}</script></body></html>\n"
    )


def is_own_contact_sheet(path: Path) -> bool:
    """Whether `path` is absent or a contact sheet svdrender wrote (its generator tag in the first 4 KiB)."""
    if not os.path.lexists(path):
        return True  # or cannot be looked up at all (a name too long): taking the lock reports that
    try:
        # O_NONBLOCK and O_NOFOLLOW: a FIFO or symlink under this name is not ours and must not hang the check.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, 4096)
    except OSError:
        return False
    finally:
        os.close(fd)
    return f'<meta name="generator" content="{GENERATOR} '.encode() in head


def write_contact_sheet(out_dir: Path, manifest: Manifest) -> Path:
    """Write `<out_dir>/index.html` for a run manifest, atomically."""
    path = Path(out_dir) / INDEX_NAME
    write_bytes_atomic(path, render_contact_sheet(manifest, Path(out_dir)).encode("utf-8"))
    return path
