"""The contact sheet: `<out>/index.html`, one static page showing every job's video, settings, timings and status.

It is rebuilt from the job sidecars with the run manifest, so it is always as current as they are. The page is
self-contained (inline CSS and JS, no fonts, scripts or images from elsewhere) and refers to the videos by relative
links, so the output folder can be opened from disk, zipped, or uploaded as a CI artifact and still work. Every
text that comes from a sidecar (item names, errors, settings) is HTML-escaped: sidecars of merged shards are data,
not markup.

The compare view lays one item's jobs out as presets × seeds beside its input image and plays them from one clock.
Picks marked there or on the sheet are kept in the browser (localStorage) and exported as picks.json, the file
`svdrender RECIPE --picks` reads (renderer.picks). The script builds the view from the sheet's own escaped markup
with DOM calls (textContent, attributes), never from HTML strings.
"""

from __future__ import annotations

import html
import json
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import __version__
from .formats import FORMATS
from .layout import INDEX_NAME, INPUT_THUMBNAIL_NAME
from .outputs import write_bytes_atomic
from .picks import picks_template
from .records import NOT_RUN, OK, Entry, Manifest

GENERATOR = "svdrender"

STATUS_LABELS = {"ok": "ok", "failed": "FAILED", "interrupted": "INTERRUPTED", NOT_RUN: "NOT RUN"}
SETTING_LABELS = (("width", "width"), ("height", "height"), ("num_frames", "frames"), ("fps", "fps"),
                  ("num_inference_steps", "steps"), ("motion_bucket_id", "motion bucket"),
                  ("noise_aug_strength", "noise aug"), ("min_guidance_scale", "min guidance"),
                  ("max_guidance_scale", "max guidance"), ("decode_chunk_size", "decode chunk"), ("fit", "fit"),
                  ("segments", "segments"), ("loop", "loop"), ("crossfade_frames", "crossfade frames"),
                  ("interpolation", "interpolation"), ("output_fps", "output fps"))
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
button, a.button { font: inherit; font-size: 13px; padding: 2px 10px; border: 1px solid var(--line);
  border-radius: 6px; background: var(--card); color: var(--fg); cursor: pointer; text-decoration: none; }
button:disabled { opacity: .45; cursor: default; }
a.button[aria-disabled="true"] { opacity: .45; pointer-events: none; }
nav.views { display: flex; gap: 4px; margin: 0 0 8px; }
nav.views button[aria-pressed="true"] { background: var(--fg); color: var(--card); border-color: var(--fg); }
h2 button.to-compare { margin-left: 8px; vertical-align: middle; }
.picks { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 8px 0 0; }
.picks details { flex-basis: 100%; }
.picks textarea { display: block; width: min(100%, 720px); font: 12px/1.3 ui-monospace, monospace; }
button.pick[aria-pressed="true"] { color: #fff; background: var(--warn); border-color: var(--warn); }
.actions { display: flex; gap: 6px; align-items: center; }
section.compare { padding: 12px 20px 40px; }
.controls { display: flex; flex-wrap: wrap; gap: 8px 12px; align-items: center; margin: 0 0 12px; }
.controls select { font: inherit; margin-left: 4px; }
.controls input[type=range] { flex: 1 1 220px; }
.controls output { font-variant-numeric: tabular-nums; min-width: 16em; }
.grid { display: grid; gap: 8px; align-items: start; }
.grid .head { font-weight: 600; align-self: center; overflow-wrap: anywhere; }
.grid .head.col { text-align: center; }
.grid .cell { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 6px;
  display: flex; flex-direction: column; gap: 4px; min-width: 0; }
.grid .cell.status-failed { border: 2px solid var(--bad); }
.grid .cell.status-interrupted { border: 2px dashed var(--warn); }
.grid .cell.none { color: var(--muted); align-items: center; justify-content: center; min-height: 48px; }
.compare-body { display: flex; gap: 16px; align-items: flex-start; }
figure.input { flex: 0 0 180px; margin: 0; }
figure.input img { width: 100%; height: auto; border-radius: 4px; display: block; }
figure.input figcaption { font-size: 12px; color: var(--muted); overflow-wrap: anywhere; }
.grid .label { display: flex; align-items: center; gap: 6px; font-size: 12px; }
.grid .head small { display: block; font-weight: normal; color: var(--muted); }
.grid .frame { flex: 1; min-width: 0; overflow: hidden; white-space: nowrap; color: var(--muted);
  font-variant-numeric: tabular-nums; }
.grid .label button { flex-shrink: 0; white-space: nowrap; }
.media.empty { flex-direction: column; gap: 4px; padding: 6px; }
kbd { font: 12px ui-monospace, monospace; padding: 0 4px; border: 1px solid var(--line); border-radius: 4px; }
.shortcuts { margin: 12px 0 0; color: var(--muted); }
"""

# The page's one script. Filters show and hide jobs by their data-* attributes. The URL hash keeps the view
# (#item=x&status=failed filters the sheet; #compare=x&layout=columns opens the compare view), so a link can point
# at the failures of one item or at one item's comparison.
# The compare view plays its videos from one clock: the longest video is the master, the others are seeked to its
# time whenever they drift by more than half a frame; a shorter video holds its last frame until the master loops.
# Frame steps move the clock to the middle of the next frame of the highest frame rate in the grid.
SCRIPT = """
(function () {
  'use strict';
  var byId = function (id) { return document.getElementById(id); };
  var all = function (selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  };
  function params() { return new URLSearchParams(location.hash.slice(1)); }
  function setParams(changes) {
    var p = params();
    Object.keys(changes).forEach(function (k) { if (changes[k]) { p.set(k, changes[k]); } else { p.delete(k); } });
    var hash = p.toString();
    if (hash !== location.hash.slice(1)) { history.replaceState(null, '', hash ? '#' + hash : location.pathname); }
  }
  function node(tag, className, text) {
    var n = document.createElement(tag);
    if (className) { n.className = className; }
    if (text !== undefined) { n.textContent = text; }
    return n;
  }
  function unique(values) { return values.filter(function (v, i) { return values.indexOf(v) === i; }); }

  // --- the sheet's filters ---
  var form = byId('filters');
  var selects = all('select', form);
  var cards = all('article.job');
  var shown = byId('shown');
  selects.forEach(function (s) {
    var wanted = params().get(s.name);
    if (wanted !== null && Array.prototype.some.call(s.options, function (o) { return o.value === wanted; })) {
      s.value = wanted;
    }
  });
  function applyFilters() {
    var count = 0;
    var changes = {};
    selects.forEach(function (s) { changes[s.name] = s.value; });
    cards.forEach(function (card) {
      var match = selects.every(function (s) { return !s.value || card.getAttribute('data-' + s.name) === s.value; });
      card.hidden = !match;
      if (match) { count += 1; }
    });
    all('section.item').forEach(function (group) {
      group.hidden = !group.querySelector('article.job:not([hidden])');
    });
    shown.textContent = count + ' of ' + cards.length + ' jobs shown';
    setParams(changes);
  }
  form.addEventListener('change', applyFilters);
  applyFilters();

  // --- picks: kept in localStorage per page, exported as picks.json ---
  var picksBox = byId('picks');
  var template = JSON.parse(picksBox.getAttribute('data-picks'));
  var storeKey = 'svdrender.picks:' + location.pathname;
  var pickable = cards.filter(function (c) { return c.getAttribute('data-status') === 'ok'; }).map(function (c) {
    return c.id;
  });
  var picked = new Set(loadPicks());
  var blobUrl = null;
  function loadPicks() {
    try {
      var stored = JSON.parse(localStorage.getItem(storeKey) || '[]');
      return Array.isArray(stored) ? stored.filter(function (x) { return typeof x === 'string'; }) : [];
    } catch (e) {
      return [];
    }
  }
  function savePicks() {
    try { localStorage.setItem(storeKey, JSON.stringify(Array.from(picked))); } catch (e) { /* storage off */ }
  }
  function refreshPicks() {
    var jobs = pickable.filter(function (id) { return picked.has(id); });  // in the sheet's order
    var text = JSON.stringify(Object.assign({}, template, {jobs: jobs}), null, 2) + '\\n';
    var count = jobs.length;
    byId('picks-text').value = text;
    byId('picks-count').textContent = count + ' picked';
    var link = byId('picks-download');
    if (blobUrl) { URL.revokeObjectURL(blobUrl); }
    blobUrl = count ? URL.createObjectURL(new Blob([text], {type: 'application/json'})) : null;
    if (blobUrl) {
      link.href = blobUrl;
      link.removeAttribute('aria-disabled');
    } else {
      link.removeAttribute('href');
      link.setAttribute('aria-disabled', 'true');
    }
    all('button.pick').forEach(function (b) {
      var on = picked.has(b.getAttribute('data-job'));
      b.setAttribute('aria-pressed', String(on));
      b.textContent = on ? '\\u2605 Picked' : '\\u2606 Pick';
    });
  }
  function togglePick(id) {
    if (pickable.indexOf(id) < 0) { return; }
    if (picked.has(id)) { picked.delete(id); } else { picked.add(id); }
    savePicks();
    refreshPicks();
  }
  document.addEventListener('click', function (e) {
    var button = e.target.closest('button.pick');
    if (button) { togglePick(button.getAttribute('data-job')); }
  });
  byId('picks-clear').addEventListener('click', function () { picked.clear(); savePicks(); refreshPicks(); });
  window.addEventListener('storage', function (e) {
    if (e.key === storeKey) { picked = new Set(loadPicks()); refreshPicks(); }
  });

  // --- the compare view ---
  var view = byId('compare');
  var sheet = document.querySelector('main');
  var grid = byId('compare-grid');
  var itemSelect = byId('compare-item');
  var layoutSelect = byId('compare-layout');
  var playButton = byId('play');
  var scrub = byId('scrub');
  var readout = byId('clock');
  var sheetVideos = all('main video');
  var jobs = cards.map(function (c) {
    return {card: c, id: c.id, item: c.getAttribute('data-item'), preset: c.getAttribute('data-preset'),
            seed: c.getAttribute('data-seed'), status: c.getAttribute('data-status'),
            fps: Number(c.getAttribute('data-fps')) || 0, frames: Number(c.getAttribute('data-frames')) || 0,
            sources: all('video source', c).map(function (s) {
              return {src: s.getAttribute('src'), type: s.getAttribute('type')};
            })};
  });
  var clips = [];
  var master = null;
  var clock = {playing: false, time: 0, rate: 1};
  var scrubbing = false;

  function showInput(item) {
    var figure = byId('compare-input');
    figure.textContent = '';
    var section = all('section.item').filter(function (s) { return s.getAttribute('data-item') === item; })[0];
    var thumb = section && section.querySelector('img.input');
    if (thumb) {
      var img = node('img');
      img.src = thumb.getAttribute('src');
      img.alt = 'input image of ' + item;
      figure.appendChild(img);
    }
    var source = section && section.querySelector('h2 small');
    figure.appendChild(node('figcaption', '', 'input' + (source ? ': ' + source.textContent : '')));
  }
  function clipCell(job) {
    var cell = node('div', 'cell status-' + job.status.replace(/ /g, '-'));
    cell.setAttribute('data-job', job.id);
    var media = node('div', 'media');
    media.style.aspectRatio = (Number(job.card.getAttribute('data-width')) || 16) + ' / ' +
                              (Number(job.card.getAttribute('data-height')) || 9);
    cell.title = job.id;  // the row and column heads name its preset and seed
    var label = node('div', 'label');
    cell.appendChild(media);
    cell.appendChild(label);
    if (job.status === 'ok' && job.sources.length && job.fps > 0 && job.frames > 0) {
      var video = node('video');
      video.muted = true;
      video.playsInline = true;
      video.preload = 'auto';
      job.sources.forEach(function (s) {
        var source = node('source');
        source.src = s.src;
        if (s.type) { source.type = s.type; }
        video.appendChild(source);
      });
      media.appendChild(video);
      var clip = {video: video, job: job, fps: job.fps, end: job.frames / job.fps, frames: job.frames,
                  counter: node('span', 'frame'), fixed: 0};
      clip.counter.title = 'frame shown / frames';
      clip.last = clip.end - 0.5 / clip.fps;
      clips.push(clip);
      if (clips.length <= 9) { label.appendChild(node('kbd', '', String(clips.length))); }  // its pick key
      label.appendChild(clip.counter);
      var pick = node('button', 'pick');
      pick.type = 'button';
      pick.setAttribute('data-job', job.id);
      label.appendChild(pick);
      return cell;
    }
    media.classList.add('empty');
    var badge = job.card.querySelector('.badge');
    media.appendChild(node('span', badge ? badge.className : 'badge other', badge ? badge.textContent : job.status));
    var why = job.card.querySelector('.media.empty');
    if (job.status === 'ok') {
      media.appendChild(node('span', '', why ? why.textContent : 'no mp4 or webm to play in sync'));
    }
    var error = job.card.querySelector('pre.error');
    if (error) { cell.appendChild(node('pre', 'error', error.textContent)); }
    return cell;
  }
  function stopClips() {
    clock.playing = false;
    clips.forEach(function (c) {  // emptied and reloaded: the decoders are freed now, not when collected
      c.video.pause();
      c.video.textContent = '';
      c.video.load();
    });
    clips = [];
    master = null;
  }
  function buildCompare(keepTime) {
    var time = keepTime ? clock.time : 0;
    stopClips();
    grid.textContent = '';
    var item = itemSelect.value;
    var mine = jobs.filter(function (j) { return j.item === item; });
    var presets = unique(mine.map(function (j) { return j.preset; }));
    var seeds = unique(mine.map(function (j) { return j.seed; })).sort(function (x, y) {
      return BigInt(x) < BigInt(y) ? -1 : 1;  // seeds go up to 2**63 - 1, past a Number's exact integers
    });
    var byRows = layoutSelect.value !== 'columns';
    var rows = byRows ? presets : seeds;
    var cols = byRows ? seeds : presets;
    // Columns narrow enough for every row to fit the window's height (down to 120 px), at most 320 px.
    var shape = mine.filter(function (j) { return j.card.getAttribute('data-width'); })[0];
    var aspect = shape ? Number(shape.card.getAttribute('data-width')) / Number(shape.card.getAttribute('data-height'))
                       : 16 / 9;
    var width = Math.max(120, Math.min(320, (window.innerHeight - 320) / Math.max(rows.length, 1) * aspect));
    grid.style.gridTemplateColumns = 'max-content repeat(' + cols.length + ', minmax(0, ' + Math.round(width) + 'px))';
    showInput(item);
    grid.appendChild(node('div', 'head'));
    function head(kind, value, isPreset) {
      var cell = node('div', 'head ' + kind, isPreset ? value : 'seed ' + value);
      var card = isPreset && mine.filter(function (j) { return j.preset === value; })[0].card;
      var description = card && card.querySelector('.title small');
      if (description) { cell.appendChild(node('small', '', description.textContent)); }
      return cell;
    }
    cols.forEach(function (c) { grid.appendChild(head('col', c, !byRows)); });
    rows.forEach(function (r) {
      grid.appendChild(head('row', r, byRows));
      cols.forEach(function (c) {
        var preset = byRows ? r : c;
        var seed = byRows ? c : r;
        var job = mine.filter(function (j) { return j.preset === preset && j.seed === seed; })[0];
        grid.appendChild(job ? clipCell(job) : node('div', 'cell none', '\\u2014'));
      });
    });
    master = clips.reduce(function (best, c) { return !best || c.end > best.end ? c : best; }, null);
    scrub.max = master ? String(master.last) : '0';
    all('#compare .controls button, #scrub').forEach(function (control) { control.disabled = !master; });
    seekAll(time);
    refreshPicks();
  }
  function finestFps() { return Math.max.apply(null, clips.map(function (c) { return c.fps; })); }
  function show(time) {
    clips.forEach(function (c) {
      var t = c.video.currentTime;
      c.counter.textContent = Math.min(c.frames, Math.floor(t * c.fps) + 1) + '/' + c.frames;
    });
    if (!master) { readout.textContent = 'nothing to play'; return; }
    var fps = finestFps();
    readout.textContent = 'frame ' + (Math.floor(time * fps) + 1) + ' / ' + Math.round(master.end * fps) + ' \\u00b7 ' +
                          time.toFixed(3) + ' s / ' + master.end.toFixed(3) + ' s';
    if (!scrubbing) { scrub.value = String(time); }
  }
  function seekAll(time) {
    clock.time = master ? Math.max(0, Math.min(time, master.last)) : 0;
    clips.forEach(function (c) { c.video.currentTime = Math.min(clock.time, c.last); });
    show(clock.time);
  }
  function play() {
    if (!master || clock.playing) { return; }
    if (clock.time >= master.last) { seekAll(0); }
    clock.playing = true;
    clips.forEach(function (c) {
      c.video.playbackRate = clock.rate;
      if (clock.time < c.last) { c.video.play().catch(function () {}); }
    });
    playButton.textContent = 'Pause';
    requestAnimationFrame(tick);
  }
  function pause() {
    if (!clock.playing) { return; }
    var time = master.video.currentTime;
    clock.playing = false;
    clips.forEach(function (c) { c.video.pause(); });
    seekAll(time);
    playButton.textContent = 'Play';
  }
  function tick() {
    if (!clock.playing || !master) { return; }
    if (master.video.ended) {  // the master loops, and every video starts over with it
      seekAll(0);
      clips.forEach(function (c) { c.video.play().catch(function () {}); });
    }
    var time = master.video.currentTime;
    var now = performance.now();
    clips.forEach(function (c) {
      if (c === master || c.video.seeking || time >= c.end) { return; }
      if (c.video.paused) { c.video.play().catch(function () {}); }
      if (Math.abs(c.video.currentTime - time) > 0.5 / c.fps && now - c.fixed > 250) {
        c.fixed = now;  // one correction at a time: a slow decoder must not be seeked on every frame
        c.video.currentTime = time;
      }
    });
    clock.time = time;
    show(time);
    requestAnimationFrame(tick);
  }
  function stepFrames(n) {
    if (!master) { return; }
    pause();
    var fps = finestFps();
    var frame = Math.floor(clock.time * fps) + n;
    seekAll((Math.max(0, Math.min(frame, Math.round(master.end * fps) - 1)) + 0.5) / fps);
  }
  function showView() {
    var wanted = params().get('compare');
    var comparing = wanted !== null && Array.prototype.some.call(itemSelect.options, function (o) {
      return o.value === wanted;
    });
    if (comparing) {
      itemSelect.value = wanted;
      layoutSelect.value = params().get('layout') === 'columns' ? 'columns' : 'rows';
    }
    view.hidden = !comparing;
    sheet.hidden = comparing;
    form.hidden = comparing;
    byId('show-sheet').setAttribute('aria-pressed', String(!comparing));
    byId('show-compare').setAttribute('aria-pressed', String(comparing));
    sheetVideos.forEach(function (v) { if (comparing) { v.pause(); } else { v.play().catch(function () {}); } });
    if (comparing) {
      buildCompare(false);
    } else {
      stopClips();
      grid.textContent = '';
    }
  }
  function openCompare(item) {
    setParams({compare: item || itemSelect.value, layout: layoutSelect.value === 'columns' ? 'columns' : null});
    showView();
  }
  function openSheet() {
    setParams({compare: null, layout: null});
    showView();
  }
  function moveItem(step) {
    var count = itemSelect.options.length;
    openCompare(itemSelect.options[(itemSelect.selectedIndex + step + count) % count].value);
  }
  byId('show-sheet').addEventListener('click', openSheet);
  byId('show-compare').addEventListener('click', function () { openCompare(); });
  all('button.to-compare').forEach(function (b) {
    b.addEventListener('click', function () { openCompare(b.getAttribute('data-item')); });
  });
  itemSelect.addEventListener('change', function () { openCompare(itemSelect.value); });
  layoutSelect.addEventListener('change', function () {
    setParams({layout: layoutSelect.value === 'columns' ? 'columns' : null});
    buildCompare(true);
  });
  playButton.addEventListener('click', function () { if (clock.playing) { pause(); } else { play(); } });
  byId('step-back').addEventListener('click', function () { stepFrames(-1); });
  byId('step-forward').addEventListener('click', function () { stepFrames(1); });
  byId('speed').addEventListener('change', function (e) {
    clock.rate = Number(e.target.value) || 1;
    clips.forEach(function (c) { c.video.playbackRate = clock.rate; });
  });
  scrub.addEventListener('pointerdown', function () { scrubbing = true; });
  window.addEventListener('pointerup', function () { scrubbing = false; });  // also when let go outside it
  scrub.addEventListener('input', function () { seekAll(Number(scrub.value)); });
  window.addEventListener('hashchange', showView);
  document.addEventListener('keydown', function (e) {
    if (view.hidden || e.altKey || e.ctrlKey || e.metaKey) { return; }
    if (e.target.closest && e.target.closest('textarea, select, input:not([type=range])')) { return; }
    var digit = /^[1-9]$/.test(e.key) ? clips[Number(e.key) - 1] : undefined;
    if (e.key === ' ' || e.key === 'k' || e.key === 'K') {
      if (clock.playing) { pause(); } else { play(); }
    } else if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
      stepFrames(e.key === 'ArrowLeft' ? -1 : 1);
    } else if (e.key === 'Home' || e.key === 'End') {
      pause();
      seekAll(e.key === 'Home' ? 0 : Infinity);
    } else if (e.key === '[' || e.key === ']') {
      moveItem(e.key === '[' ? -1 : 1);
    } else if (e.key === 'l' || e.key === 'L') {
      layoutSelect.value = layoutSelect.value === 'columns' ? 'rows' : 'columns';
      layoutSelect.dispatchEvent(new Event('change'));
    } else if (e.key === 'Escape') {
      openSheet();
    } else if (digit) {
      togglePick(digit.job.id);
    } else {
      return;
    }
    e.preventDefault();
  });
  // A focused button takes Space as a click when the key goes up; the shortcut has already acted on key down.
  document.addEventListener('keyup', function (e) {
    if (!view.hidden && e.key === ' ' && e.target.closest && e.target.closest('button')) { e.preventDefault(); }
  });
  refreshPicks();
  showView();
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
    rows.append(("scheduler", job.scheduler.class_name if job.scheduler else job.scheduler_choice.preset))
    sigmas = job.scheduler_choice.sigmas
    if sigmas is not None:
        rows.append(("sigma schedule", sigmas if isinstance(sigmas, str) else f"custom ({len(sigmas)} sigmas)"))
    model = job.model
    revision = model.resolved_revision or model.requested_revision
    rows.append(("model", model.id + (f" @ {revision}" if revision else "")))
    rows += [("dtype", model.dtype), ("device", model.device)]
    rows.append(("input", job.input_path))
    if job.frames_sha256:
        rows.append(("frames sha256", job.frames_sha256[:16] + "…"))
    rows.append(("finished", job.finished))
    cells = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_number(v))}</td></tr>" for k, v in rows if v is not None)
    return f"<details><summary>settings</summary><table>{cells}</table></details>"


def _card(entry: Entry, out_dir: Path) -> str:
    status = entry.status
    badge = status.replace(" ", "-") if status in STATUS_LABELS else "other"
    sidecar = entry.sidecar
    description = sidecar.preset_description if sidecar is not None else None
    # What the compare view needs to play the job in step with others: its frame count and rate.
    timing = (f' data-fps="{int(sidecar.fps)}" data-frames="{int(sidecar.frame_count)}" '
              f'data-width="{int(sidecar.width)}" data-height="{int(sidecar.height)}"'
              ) if status == OK and sidecar and sidecar.frame_count else ""
    pick = (f'<div class="actions"><button type="button" class="pick" data-job="{_e(entry.job_id)}" '
            'aria-pressed="false">☆ Pick</button></div>') if status == OK else ""
    return (
        f'<article class="job status-{_e(badge)}" id="{_e(entry.job_id)}" data-item="{_e(entry.item)}" '
        f'data-preset="{_e(entry.preset)}" data-seed="{_e(entry.seed)}" data-status="{_e(status)}"{timing}>'
        f'{_media(entry, out_dir)}'
        f'<div class="title"><div><strong>{_e(entry.preset)} · seed {_e(entry.seed)}</strong>'
        + (f"<small>{_e(description)}</small>" if description else "")
        + f'</div><span class="badge {_e(badge)}">{_e(STATUS_LABELS.get(status, status))}</span></div>'
        + (f'<pre class="error">{_e(entry.error)}</pre>' if entry.error and status != "ok" else "")
        + pick + _settings_facts(entry) + _timings(entry) + _details(entry) + "</article>"
    )


def _select(name: str, label: str, values: list[str], counts: dict[str, int]) -> str:
    options = f'<option value="">all ({sum(counts.values())})</option>' + "".join(
        f'<option value="{_e(v)}">{_e(v)} ({counts[v]})</option>' for v in values)
    return f'<label>{_e(label)}<select name="{_e(name)}">{options}</select></label>'


SHORTCUTS = (("Space", "play / pause"), ("← →", "one frame back / on"), ("Home End", "first / last frame"),
             ("1–9", "pick or unpick the n-th video"), ("[ ]", "previous / next item"),
             ("L", "swap rows and columns"), ("Esc", "back to the sheet"))


def _compare_view(items: list[str]) -> str:
    """The compare view's controls and an empty grid; the script fills the grid with the chosen item's jobs."""
    options = "".join(f'<option value="{_e(item)}">{_e(item)}</option>' for item in items)
    keys = " · ".join(" ".join(f"<kbd>{_e(k)}</kbd>" for k in key.split()) + f" {_e(what)}" for key, what in SHORTCUTS)
    return ('<section class="compare" id="compare" hidden><div class="controls">'
            f'<label>Item<select id="compare-item">{options}</select></label>'
            '<label>Layout<select id="compare-layout"><option value="rows">presets in rows</option>'
            '<option value="columns">presets in columns</option></select></label>'
            '<button type="button" id="play">Play</button>'
            '<button type="button" id="step-back" title="one frame back (←)">◀ frame</button>'
            '<button type="button" id="step-forward" title="one frame on (→)">frame ▶</button>'
            '<input type="range" id="scrub" min="0" max="0" step="any" value="0" aria-label="time">'
            '<output id="clock"></output>'
            '<label>Speed<select id="speed"><option value="0.25">¼×</option><option value="0.5">½×</option>'
            '<option value="1" selected>1×</option></select></label></div>'
            '<div class="compare-body"><figure class="input" id="compare-input"></figure>'
            '<div class="grid" id="compare-grid"></div></div>'
            f'<p class="shortcuts">Keys: {keys}</p></section>')


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
    models = sorted({e.sidecar.model.id for e in entries if e.sidecar is not None})
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
                        + f'<button type="button" class="to-compare" data-item="{_e(item)}">compare</button>'
                        + f'</h2><div class="cards">{cards}</div></section>')
    body = "".join(sections) or '<p class="muted">No jobs have been rendered into this folder yet.</p>'
    filters = (_select("item", "Item", list(groups), tally([e.item for e in entries]))
               + _select("preset", "Preset", presets, tally([e.preset for e in entries]))
               + _select("status", "Status", sorted(statuses), statuses) + '<output id="shown"></output>')
    recipe_path = run.recipe if run is not None else None
    template = picks_template(recipe=run.name if run is not None else None, recipe_path=recipe_path,
                              run_id=run.run_id if run is not None else None, output_dir=str(out_dir.resolve()))
    command = f"svdrender {recipe_path or 'RECIPE'} --picks picks.json"
    picks = (f'<div class="picks" id="picks" data-picks="{_e(json.dumps(template))}"><output id="picks-count">'
             '</output><a class="button" id="picks-download" download="picks.json">Download picks.json</a>'
             '<button type="button" id="picks-clear">Clear picks</button><details><summary>picks.json as text'
             '</summary><textarea id="picks-text" readonly rows="8" spellcheck="false" aria-label="picks.json">'
             f'</textarea><p class="muted">Render exactly the picked jobs: <code>{_e(command)}</code>; each picked '
             f'item and seed with another preset, as new jobs beside these: <code>{_e(command)} --preset NAME'
             '</code></p></details></div>')
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="{GENERATOR} {_e(__version__)}">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)} · svdrender contact sheet</title><style>{STYLE}</style></head>\n"
        f'<body><header class="top"><h1>{_e(title)}</h1>{problem}<p class="meta">{meta}</p>'
        '<nav class="views"><button type="button" id="show-sheet" aria-pressed="true">Sheet</button>'
        '<button type="button" id="show-compare" aria-pressed="false">Compare</button></nav>'
        f'<form class="filters" id="filters">{filters}</form>{picks}</header>\n'
        f"<main>{body}</main>\n{_compare_view(list(groups))}\n<script>{SCRIPT}</script></body></html>\n"
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
