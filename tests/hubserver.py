"""A stand-in for the Hugging Face hub on 127.0.0.1: the API paths huggingface_hub calls, answered the way the hub
answers them (status codes and X-Error-Code headers), for a few repositories that each show one failure.

huggingface_hub is pointed at it with HF_ENDPOINT (a subprocess) or `huggingface_hub.constants.ENDPOINT`
(in-process); nothing in huggingface_hub is replaced.

- acme/svd: public; revision main resolves to COMMIT and holds model_index.json; any other revision is missing
- acme/gated: gated; 401 without a token, 403 with one whose owner has not accepted the licence
- acme/private-or-missing: 404 RepoNotFound
- acme/no-pipeline: exists, but has no model_index.json
- any request with the token BAD_TOKEN: 401 invalid credentials, as the hub answers a revoked token
"""

from __future__ import annotations

import json
import re
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

COMMIT = "5f2b6e1c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"
BAD_TOKEN = "hf_revokedrevokedrevokedrevoked"
MODEL_INDEX = json.dumps({"_class_name": "StableVideoDiffusionPipeline", "_diffusers_version": "0.42.0"}).encode()
PUBLIC, GATED, MISSING, NO_PIPELINE = "acme/svd", "acme/gated", "acme/private-or-missing", "acme/no-pipeline"

_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/?]+))?(?:/auth-check)?(?:\?.*)?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)(?:\?.*)?$")


class HubHandler(BaseHTTPRequestHandler):
    """Answers GET and HEAD for model info and file resolution."""

    server_version = "hubserver/1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message, "Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _refused(self, repo: str, rev: str) -> bool:
        """Answer the request's failure, if it has one; True when answered."""
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token == BAD_TOKEN:
            self._error(401, None, "Invalid credentials in Authorization header")
        elif repo == GATED:
            self._error(403 if token else 401, "GatedRepo",
                        "Access to model acme/gated is restricted. You must have access to it and be authenticated "
                        "to access it. Please log in.")
        elif repo not in (PUBLIC, NO_PIPELINE):
            self._error(404, "RepoNotFound", "Repository not found")
        elif rev not in ("main", COMMIT):
            self._error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        else:
            return False
        return True

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        api, resolve = _API.match(self.path), _RESOLVE.match(self.path)
        if api:
            repo, rev = api["repo"].replace("%2F", "/"), api["rev"] or "main"
            if not self._refused(repo, rev):
                files = [] if repo == NO_PIPELINE else ["model_index.json"]
                info = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "gated": False,
                        "siblings": [{"rfilename": f} for f in files]}
                self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        elif resolve:
            repo, rev, name = resolve["repo"], resolve["rev"], resolve["file"]
            if self._refused(repo, rev):
                return
            if repo == NO_PIPELINE or name != "model_index.json":
                self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
                return
            self._send(200, MODEL_INDEX, {"X-Repo-Commit": COMMIT, "ETag": '"index-etag"',
                                          "Content-Type": "application/json"})
        else:
            self._error(404, None, "Not Found")


@contextmanager
def hub_server() -> Iterator[str]:
    """A running stand-in hub on 127.0.0.1 (an ephemeral port); yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A 127.0.0.1 URL nothing listens on: connections are refused, as when the hub is unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def hub_url():
    """The stand-in hub's URL, one server per test module."""
    with hub_server() as url:
        yield url


@pytest.fixture
def online(hub_url, monkeypatch):
    """huggingface_hub online, talking to the stand-in hub, with no token; yields its URL."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub_url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hub_url
