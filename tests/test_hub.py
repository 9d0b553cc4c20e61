"""Hub errors say the cause and the next step in one line: checked against a real HTTP server on 127.0.0.1 that
answers as the hub does (tests/hubserver.py), through huggingface_hub's real client; nothing is mocked."""

from __future__ import annotations

import pytest

from conftest import TINY_RECIPE, cli_env, run_cli
from hubserver import (BAD_TOKEN, COMMIT, GATED, MISSING, NO_PIPELINE, PUBLIC, closed_port_url, hub_url,  # noqa: F401
                       online)
from renderer import hub
from renderer.hub import HubCause

TOKENS = "set HF_TOKEN to a token from https://huggingface.co/settings/tokens or run `hf auth login`"


def test_public_model_is_verified_with_its_commit(online):
    assert hub.probe(PUBLIC, "main") == (COMMIT, None)


@pytest.mark.parametrize("repo, revision, token, cause, message", [
    (GATED, "main", None, HubCause.GATED,
     "model 'acme/gated' is gated: accept its licence at {url}/acme/gated with your Hugging Face account, then "
     + TOKENS),
    (GATED, "main", "hf_licencenotaccepted", HubCause.GATED,
     "model 'acme/gated' is gated and your account has no access yet: accept its licence at {url}/acme/gated with "
     "the account your token belongs to (HF_TOKEN or `hf auth login`)"),
    (PUBLIC, "main", BAD_TOKEN, HubCause.BAD_TOKEN,
     "the hub refused your Hugging Face token (401 invalid credentials) for 'acme/svd': " + TOKENS
     + ", or unset HF_TOKEN for a public model"),
    (MISSING, "main", None, HubCause.NOT_FOUND,
     "model 'acme/private-or-missing' was not found on {url}: check the id (org/name); if it is private, " + TOKENS),
    (PUBLIC, "v9", None, HubCause.REVISION_NOT_FOUND,
     "model 'acme/svd' has no revision 'v9': set model.revision to a branch, tag or commit listed at "
     "{url}/acme/svd/tree/main"),
    (NO_PIPELINE, "main", None, HubCause.NOT_A_PIPELINE,
     "model 'acme/no-pipeline' revision 'main' has no model_index.json: it is not a diffusers pipeline; use an SVD "
     "pipeline repository such as stabilityai/stable-video-diffusion-img2vid-xt"),
])
def test_probe_names_the_cause_and_the_next_step(online, monkeypatch, repo, revision, token, cause, message):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    commit, failure = hub.probe(repo, revision)
    assert commit is None
    assert (failure.cause, failure.message) == (cause, message.format(url=online))
    assert not failure.unverifiable


def test_a_download_error_is_classified_like_the_probe(online, tmp_path):
    """What huggingface_hub raises while downloading (diffusers wraps it, keeping it in the chain)."""
    from huggingface_hub import hf_hub_download

    for repo, revision, cause in ((GATED, "main", HubCause.GATED), (PUBLIC, "v9", HubCause.REVISION_NOT_FOUND),
                                  (MISSING, "main", HubCause.NOT_FOUND)):
        with pytest.raises(Exception) as info:
            hf_hub_download(repo, "model_index.json", revision=revision, cache_dir=tmp_path, endpoint=online)
        try:  # as diffusers does: its own error raised while handling huggingface_hub's
            try:
                raise info.value
            except Exception as exc:
                raise OSError(f"{repo} is not a valid model identifier; check the stacktrace above") from exc
        except OSError as wrapped:
            assert hub.classify(wrapped, repo, revision).cause == cause


def test_unreachable_hub_could_not_verify(online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    commit, failure = hub.probe(PUBLIC)
    assert commit is None and failure.cause == HubCause.UNREACHABLE and failure.unverifiable
    assert failure.message == (
        f"cannot reach the Hugging Face hub at {hub.endpoint()} and model 'acme/svd' is not in the local cache: "
        "check the network or proxy (HTTPS_PROXY), or download it once where there is network (`hf download "
        "acme/svd`), or set model.id to a local folder")


def test_offline_and_not_cached(monkeypatch):
    from huggingface_hub import constants, hf_hub_download

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(Exception) as info:
        hf_hub_download(PUBLIC, "model_index.json", revision="v2")
    failure = hub.classify(info.value, PUBLIC, "v2")
    assert failure.cause == HubCause.OFFLINE_NOT_CACHED and failure.unverifiable
    assert failure.message == (
        f"model 'acme/svd' revision 'v2' is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
        "HF_HUB_OFFLINE=1 forbids downloading it: download it once where there is network (`hf download acme/svd "
        "--revision v2`), or set model.id to a local folder")


def test_not_a_hub_error_is_left_to_the_caller():
    assert hub.classify(ValueError("bad config"), PUBLIC) is None


def test_render_of_a_gated_model_says_what_to_do_in_one_line(hub_url, write_recipe):
    """The real CLI and diffusers' real from_pretrained against the server: one line, exit 1, none of diffusers'
    advice for library authors."""
    path = write_recipe(TINY_RECIPE.replace("model: builtin:tiny", f"model: {GATED}"))
    env = cli_env(HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_ENDPOINT=hub_url)
    env.pop("HF_TOKEN", None)
    proc = run_cli(path, "--quiet", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"svdrender: model 'acme/gated' is gated: accept its licence at {hub_url}/acme/gated with your Hugging Face "
        "account, then " + TOKENS]
    for relayed in ("Traceback", "local_files_only", "stacktrace"):
        assert relayed not in proc.stdout + proc.stderr
