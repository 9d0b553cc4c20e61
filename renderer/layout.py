"""The names svdrender gives its own files in an output folder: one place, shared by recipe checks, plan, outputs,
the run loop, report and the contact sheet."""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.html"
LOCK_NAME = ".svdrender.lock"
# Temporaries are named `.<final name><TMP_MARKER><run id>`; the run id is recorded in the lock file, so a later run
# sweeps exactly the temporaries svdrender made (outputs.temp_path, lock.output_lock).
TMP_MARKER = ".svdtmp-"
SIDECAR_SUFFIX = ".json"
# `<out>/<item>/input.jpg`: a thumbnail of the item's input image, shown on the contact sheet.
INPUT_THUMBNAIL_NAME = "input.jpg"

# Names an item or preset may not take, because a job folder of that name would collide with these files.
RESERVED_NAMES = frozenset({MANIFEST_NAME, INDEX_NAME, LOCK_NAME, INPUT_THUMBNAIL_NAME})
