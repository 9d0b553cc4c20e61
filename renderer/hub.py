"""Hugging Face hub failures in one line each: the cause, and what the user does next.

diffusers wraps huggingface_hub's errors in its own (with advice for library authors, such as "pass
local_files_only" or "check the stacktrace above", which a CLI user cannot act on); the original error is still in
the exception chain, and it is classified here by huggingface_hub's own exception classes. No torch import, so
`svdrender doctor` and the engine share it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

# The licence page of a gated model, and where tokens are made.
TOKENS_URL = "https://huggingface.co/settings/tokens"


class HubCause(Enum):
    """Why a hub model cannot be loaded."""

    GATED = "gated"
    BAD_TOKEN = "bad token"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not found"
    REVISION_NOT_FOUND = "revision not found"
    NOT_A_PIPELINE = "not a pipeline"
    OFFLINE_NOT_CACHED = "offline, not cached"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class HubFailure:
    """A classified hub error: its cause and the one-line message that says what to do."""

    cause: HubCause
    message: str

    @property
    def unverifiable(self) -> bool:
        """True when the hub could not be asked (offline or unreachable): the model may still be fine."""
        return self.cause in (HubCause.OFFLINE_NOT_CACHED, HubCause.UNREACHABLE)


def offline() -> bool:
    """HF_HUB_OFFLINE, as huggingface_hub read it."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def endpoint() -> str:
    """The hub to ask: HF_ENDPOINT as it is set now (huggingface_hub read it at import), else huggingface_hub's."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception it was raised from or during, innermost last."""
    seen: list[BaseException] = []
    while exc is not None and not any(exc is s for s in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_connection_error(exc: BaseException) -> bool:
    # httpx's and requests' connection errors share no base class with each other or with OSError's.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ProxyError",
                         "ConnectionError", "TimeoutError"})


def classify(exc: BaseException, model_id: str, revision: str = "main") -> HubFailure | None:
    """The hub failure behind `exc` (a diffusers or huggingface_hub error), or None when it is not one."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    found = chain(exc)
    page = f"{endpoint()}/{model_id}"
    login = f"set HF_TOKEN to a token from {TOKENS_URL} or run `hf auth login`"
    flag = "" if revision == "main" else f" --revision {revision}"
    download = (f"download it once where there is network (`hf download {model_id}{flag}`), or set model.id to a "
                "local folder")
    for e in found:
        if isinstance(e, GatedRepoError) and _status(e) == 403:  # a valid token, but no access granted yet
            return HubFailure(HubCause.GATED, f"model '{model_id}' is gated and your account has no access yet: "
                                              f"accept its licence at {page} with the account your token belongs to "
                                              "(HF_TOKEN or `hf auth login`)")
        if isinstance(e, GatedRepoError):
            return HubFailure(HubCause.GATED, f"model '{model_id}' is gated: accept its licence at {page} with your "
                                              f"Hugging Face account, then {login}")
        if isinstance(e, RevisionNotFoundError):
            return HubFailure(HubCause.REVISION_NOT_FOUND,
                              f"model '{model_id}' has no revision '{revision}': set model.revision to a branch, tag "
                              f"or commit listed at {page}/tree/main")
        if isinstance(e, RepositoryNotFoundError):
            return HubFailure(HubCause.NOT_FOUND,
                              f"model '{model_id}' was not found on {endpoint()}: check the id (org/name); if it is "
                              f"private, {login}")
        if isinstance(e, RemoteEntryNotFoundError):
            return HubFailure(HubCause.NOT_A_PIPELINE,
                              f"model '{model_id}' revision '{revision}' has no model_index.json: it is not a "
                              "diffusers pipeline; use an SVD pipeline repository such as "
                              "stabilityai/stable-video-diffusion-img2vid-xt")
        if isinstance(e, HfHubHTTPError) and _status(e) == 401:
            return HubFailure(HubCause.BAD_TOKEN, f"the hub refused your Hugging Face token (401 invalid "
                                                  f"credentials) for '{model_id}': {login}, or unset HF_TOKEN for a "
                                                  "public model")
        if isinstance(e, HfHubHTTPError) and _status(e) == 403:
            return HubFailure(HubCause.FORBIDDEN, f"your Hugging Face token may not read '{model_id}' (403 "
                                                  f"forbidden): accept its licence at {page} and use a token with "
                                                  f"read access ({TOKENS_URL}), then {login}")
    if any(isinstance(e, OfflineModeIsEnabled) or (offline() and isinstance(e, LocalEntryNotFoundError))
           for e in found):
        return HubFailure(HubCause.OFFLINE_NOT_CACHED,
                          f"model '{model_id}' revision '{revision}' is not in the local Hugging Face cache "
                          f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids downloading it: {download}")
    if any(_is_connection_error(e) for e in found) or any(isinstance(e, LocalEntryNotFoundError) for e in found):
        return HubFailure(HubCause.UNREACHABLE,
                          f"cannot reach the Hugging Face hub at {endpoint()} and model '{model_id}' is not in the "
                          f"local cache: check the network or proxy (HTTPS_PROXY), or {download}")
    return None


def probe(model_id: str, revision: str = "main", timeout: float = 10.0) -> tuple[str | None, HubFailure | None]:
    """Ask the hub whether `model_id` at `revision` can be downloaded with the current token, as a download would
    (a HEAD request for its model_index.json); (the commit it resolves to, None) or (None, the failure)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import OfflineModeIsEnabled

    if offline():
        return None, classify(OfflineModeIsEnabled("HF_HUB_OFFLINE=1"), model_id, revision)
    try:
        url = hf_hub_url(model_id, "model_index.json", revision=revision, endpoint=endpoint())
        meta = get_hf_file_metadata(url, timeout=timeout)
    except Exception as exc:  # every hub and network error is classified; anything else is reported as it is
        failure = classify(exc, model_id, revision)
        if failure is None:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failure = HubFailure(HubCause.UNREACHABLE, f"the hub at {endpoint()} gave no usable answer for "
                                                       f"'{model_id}': {detail}")
        return None, failure
    return meta.commit_hash, None
