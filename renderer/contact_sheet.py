"""The contact sheet: `<out>/index.html`, one static page showing every job's video, settings, timings and status.

It is rebuilt from the job sidecars with the run manifest, so it is always as current as they are. The page is
self-contained (inline CSS and JS, no fonts, scripts or images from elsewhere) and refers to the videos by relative
links, so the output folder can be opened from disk, zipped, or uploaded as a CI artifact and still work. Every
text that comes from a sidecar (item names, errors, settings) is HTML-escaped: sidecars of merged shards are data,
not markup.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import __version__
from .formats import FORMATS
from .layout import INDEX_NAME
from .outputs import write_bytes_atomic
from .plan import job_paths

STATUS_LABELS = {"ok": "ok", "failed": "FAILED", "interrupted": "INTERRUPTED"}
SETTING_LABELS = (("width", "width"), ("height", "height"), ("num_frames", "frames"), ("fps", "fps"),
                  ("num_inference_steps", "steps"), ("motion_bucket_id", "motion bucket"),
                  ("noise_aug_strength", "noise aug"), ("min_guidance_scale", "min guidance"),
                  ("max_guidance_scale", "max guidance"), ("decode_chunk_size", "decode chunk"), ("fit", "fit"))
TIMING_ORDER = ("load", "prepare", "denoise", "decode", "encode")

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


def job_folder(job: dict[str, Any]) -> Path:
    """The job's folder relative to the output folder (where its sidecar and files are)."""
    _, sidecar = job_paths(Path(), str(job.get("item", "")), str(job.get("preset", "")), job.get("seed", 0), ())
    return sidecar.parent


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _media(job: dict[str, Any], out_dir: Path) -> str:
    """The job's video (or animation, or first frame), or a placeholder saying why there is none."""
    folder = job_folder(job)
    files: dict[str, list[str]] = {}
    for entry in job.get("files") or []:
        files.setdefault(str(entry.get("format")), []).append(str(entry.get("path")))
    present = {fmt: [p for p in paths if (out_dir / folder / p).is_file()] for fmt, paths in files.items()}
    width, height = job.get("width") or 16, job.get("height") or 9
    box = f'style="aspect-ratio: {int(width)} / {int(height)}"'
    sources = [(present[fmt][0], f.mime) for fmt, f in FORMATS.items() if f.shown_as == "video" and present.get(fmt)]
    if sources:
        inner = "".join(f'<source src="{_href(folder, path)}" type="{mime}">' for path, mime in sources)
        return (f'<div class="media" {box}><video muted loop autoplay playsinline preload="auto" width="{int(width)}" '
                f'height="{int(height)}" title="{_e(job.get("job_id", ""))}">{inner}</video></div>')
    for fmt in (fmt for fmt, f in FORMATS.items() if f.shown_as == "img"):
        if present.get(fmt):
            path = sorted(present[fmt])[0]
            return (f'<div class="media" {box}><img src="{_href(folder, path)}" alt="{_e(job.get("job_id", ""))}" '
                    f'width="{int(width)}" height="{int(height)}"></div>')
    status = job.get("status")
    reason = "files missing" if files and status == "ok" else (STATUS_LABELS.get(status) or "no video")
    return f'<div class="media empty" {box}>{_e(reason)}</div>'


def _settings_facts(job: dict[str, Any]) -> str:
    s = job.get("settings") or {}
    if not s:
        return ""
    parts = [f"{s.get('width')}×{s.get('height')}", f"{s.get('num_frames')} frames @ {s.get('fps')} fps",
             f"{s.get('num_inference_steps')} steps", f"motion {s.get('motion_bucket_id')}",
             f"noise {_number(s.get('noise_aug_strength'))}",
             f"cfg {_number(s.get('min_guidance_scale'))}→{_number(s.get('max_guidance_scale'))}"]
    return f'<p class="facts">{_e(" · ".join(parts))}</p>'


def _timings(job: dict[str, Any]) -> str:
    t = job.get("timings") or {}
    if "total" not in t:
        return ""
    parts = [f"total {t['total']:.1f} s"] + [f"{k} {t[k]:.2f}" for k in TIMING_ORDER if isinstance(t.get(k),
                                                                                                      (int, float))]
    return f'<p class="timings muted">{_e(" · ".join(parts))}</p>'


def _details(job: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = []
    settings = job.get("settings") or {}
    rows += [(label, settings[key]) for key, label in SETTING_LABELS if key in settings]
    spec = job.get("preset_spec") or {}
    scheduler = job.get("scheduler") or {}
    rows.append(("scheduler", scheduler.get("class") or spec.get("scheduler")))
    sigmas = spec.get("sigmas")
    if sigmas is not None:
        rows.append(("sigma schedule", sigmas if isinstance(sigmas, str) else f"custom ({len(sigmas)} sigmas)"))
    model = job.get("model") or {}
    revision = model.get("resolved_revision") or model.get("requested_revision")
    rows.append(("model", f"{model.get('id')}" + (f" @ {revision}" if revision else "")))
    rows += [(key, model[key]) for key in ("dtype", "device") if model.get(key)]
    rows.append(("input", (job.get("input") or {}).get("path")))
    if job.get("frames_sha256"):
        rows.append(("frames sha256", str(job["frames_sha256"])[:16] + "…"))
    rows.append(("finished", job.get("finished")))
    cells = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_number(v))}</td></tr>" for k, v in rows if v is not None)
    return f"<details><summary>settings</summary><table>{cells}</table></details>"


def _card(job: dict[str, Any], out_dir: Path) -> str:
    status = str(job.get("status", "unknown"))
    badge = status if status in STATUS_LABELS else "other"
    error = job.get("error")
    description = (job.get("preset_spec") or {}).get("description")
    item, preset, job_id = (str(job.get(k, "")) for k in ("item", "preset", "job_id"))
    return (
        f'<article class="job status-{_e(badge)}" id="{_e(job_id)}" data-item="{_e(item)}" '
        f'data-preset="{_e(preset)}" data-status="{_e(status)}">{_media(job, out_dir)}'
        f'<div class="title"><div><strong>{_e(preset)} · seed {_e(job.get("seed"))}</strong>'
        + (f"<small>{_e(description)}</small>" if description else "")
        + f'</div><span class="badge {_e(badge)}">{_e(STATUS_LABELS.get(status, status))}</span></div>'
        + (f'<pre class="error">{_e(error)}</pre>' if error else "")
        + _settings_facts(job) + _timings(job) + _details(job) + "</article>"
    )


def _select(name: str, label: str, values: list[str], counts: dict[str, int]) -> str:
    options = f'<option value="">all ({sum(counts.values())})</option>' + "".join(
        f'<option value="{_e(v)}">{_e(v)} ({counts[v]})</option>' for v in values)
    return f'<label>{_e(label)}<select name="{_e(name)}">{options}</select></label>'


def render_contact_sheet(manifest: dict[str, Any], out_dir: Path) -> str:
    """The contact sheet HTML for a run manifest whose videos live under `out_dir`."""
    jobs = list(manifest.get("jobs") or [])
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        groups.setdefault(str(job.get("item", "")), []).append(job)
    run = manifest.get("run") or {}
    title = str(run.get("name") or Path(out_dir).name)

    def tally(key: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in jobs:
            counts[str(job.get(key, ""))] = counts.get(str(job.get(key, "")), 0) + 1
        return counts

    statuses = tally("status")
    presets = list(dict.fromkeys(str(j.get("preset", "")) for j in jobs))
    models = sorted({str((j.get("model") or {}).get("id")) for j in jobs if j.get("model")})
    counts = " · ".join(f'<span class="count-{_e(s)}">{n} {_e(s)}</span>' for s, n in sorted(statuses.items()))
    meta = (f"{len(jobs)} jobs" + (f": {counts}" if counts else "")
            + (f" · model {_e(', '.join(models))}" if models else "")
            + f' · updated {_e(manifest.get("updated") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))}'
            + ' · <a href="manifest.json">manifest.json</a>')
    sections = []
    for item, item_jobs in groups.items():
        source = (item_jobs[0].get("input") or {}).get("path")
        # Presets in the order the run has them, then seeds in numeric order: the grid is item x preset x seed.
        ordered = sorted(item_jobs, key=lambda j: (presets.index(str(j.get("preset", ""))), _seed_order(j)))
        cards = "".join(_card(j, out_dir) for j in ordered)
        sections.append(f'<section class="item" data-item="{_e(item)}"><h2>{_e(item)}'
                        + (f" <small>{_e(source)}</small>" if source else "")
                        + f'</h2><div class="cards">{cards}</div></section>')
    body = "".join(sections) or '<p class="muted">No jobs have been rendered into this folder yet.</p>'
    filters = (_select("item", "Item", list(groups), tally("item")) + _select("preset", "Preset", presets,
                                                                               tally("preset"))
               + _select("status", "Status", sorted(statuses), statuses) + '<output id="shown"></output>')
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="svdrender {_e(__version__)}">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)} · svdrender contact sheet</title><style>{STYLE}</style></head>\n"
        f'<body><header class="top"><h1>{_e(title)}</h1><p class="meta">{meta}</p>'
        f'<form class="filters" id="filters">{filters}</form></header>\n'
        f"<main>{body}</main>\n<script>{SCRIPT}</script></body></html>\n"
    )


def _seed_order(job: dict[str, Any]) -> tuple:
    seed = job.get("seed")
    return (0, seed, "") if isinstance(seed, int) else (1, 0, str(seed))


def write_contact_sheet(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write `<out_dir>/index.html` for a run manifest, atomically."""
    path = Path(out_dir) / INDEX_NAME
    write_bytes_atomic(path, render_contact_sheet(manifest, Path(out_dir)).encode("utf-8"))
    return path
