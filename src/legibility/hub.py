"""Hugging Face hub failures as one-line errors: a hub id that cannot be fetched (offline, no such repo, gated)
names the config field that asked for it and what to do, instead of transformers' 100-line traceback.

`hub_problem` reads an exception (and its causes) into one sentence, or None when it is not a hub failure;
`hub_errors` turns such an exception inside a block into a `HubError` naming the field. Blocks nest: an outer block
that knows the config field renames the error an inner loader raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from legibility.errors import LegibilityError

__all__ = ["HubError", "hub_errors", "hub_problem"]

LOCAL_HINT = "give a local folder with config.json instead"
OFFLINE = (
    "is not in the local Hugging Face cache and the hub cannot be reached (offline): {local}, or run once online "
    "(HF_HUB_OFFLINE unset) so it is downloaded and cached"
)
NOT_FOUND = "is no model repository on the Hugging Face hub (or a private one): check the id, or {local}"
GATED = (
    "is a gated repository: accept its terms on huggingface.co, then log in (`hf auth login`) or set HF_TOKEN; "
    "or {local}"
)
REVISION = "has no such revision on the Hugging Face hub: check the revision, or {local}"
MISSING_FILE = "lacks a file the loader needs: {local}"


class HubError(LegibilityError):
    """A model or tokenizer that could not be fetched from the hub; `problem` is the sentence after the name."""

    def __init__(self, field: str, name: str, problem: str) -> None:
        self.field, self.name, self.problem = field, name, problem
        super().__init__(f"{field} {name!r} {problem}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and its causes / contexts, each once (transformers' chains can loop)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _kind(exc: BaseException, bare_network: bool) -> str | None:
    """offline / gated / not_found / revision / missing_file / other_http, or None: not a hub failure. A network
    error with nothing of the hub's around it counts only with `bare_network` (inside a block that loads from the
    hub, where nothing else goes online)."""
    try:
        from huggingface_hub import errors as hf
    except ImportError:  # pragma: no cover - transformers needs huggingface_hub
        return None
    connection: tuple[type[BaseException], ...] = (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError)
    if bare_network:
        try:
            import httpx

            connection += (httpx.TransportError,)
        except ImportError:  # pragma: no cover
            pass
        try:
            import requests

            connection += (requests.ConnectionError, requests.Timeout)
        except ImportError:  # pragma: no cover
            pass
    for e in _chain(exc):
        # most specific first: GatedRepoError is a RepositoryNotFoundError, both are HfHubHTTPError
        if isinstance(e, hf.GatedRepoError):
            return "gated"
        if isinstance(e, hf.RepositoryNotFoundError):
            return "not_found"
        if isinstance(e, hf.RevisionNotFoundError):
            return "revision"
        if isinstance(e, connection):
            return "offline"
        if isinstance(e, hf.EntryNotFoundError):
            return "missing_file"
        if isinstance(e, hf.HfHubHTTPError):
            return "other_http"
    text = str(exc)  # transformers' own OSErrors, when raised without the hub error behind them
    if isinstance(exc, OSError):
        if "gated repo" in text:
            return "gated"
        if "is not a valid model identifier" in text:
            return "not_found"
        if "couldn't connect to" in text or "outgoing traffic has been disabled" in text:
            return "offline"
    return None


def hub_problem(exc: BaseException, bare_network: bool = True) -> str | None:
    """What went wrong fetching from the hub, as the rest of a sentence that starts with the model's name; None
    when `exc` is no hub failure (a bug, a broken local folder), which must keep its traceback. `bare_network`
    False: a network error counts only with a hub exception or transformers' hub message around it."""
    kind = _kind(exc, bare_network)
    if kind is None:
        return None
    if kind == "other_http":
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"could not be fetched from the Hugging Face hub ({first}): {LOCAL_HINT}"
    template = {"offline": OFFLINE, "gated": GATED, "not_found": NOT_FOUND, "revision": REVISION,
                "missing_file": MISSING_FILE}[kind]  # fmt: skip
    return template.format(local=LOCAL_HINT)


@contextmanager
def hub_errors(field: str, name: str) -> Iterator[None]:
    """Inside the block, a hub failure fetching `name` becomes `HubError(field, name, ...)`: one line naming the
    config field. A HubError from an inner block is renamed to this (outer, better-informed) field."""
    try:
        yield
    except HubError as e:
        raise HubError(field, name, e.problem) from e.__cause__
    except LegibilityError:
        raise
    except Exception as e:
        problem = hub_problem(e)
        if problem is None:
            raise
        raise HubError(field, name, problem) from e
