"""What produced an output: code version, package versions, input hashes, seed and resolved config.

Written into stats.json (pairs) and the training summary, so a result can be traced back to what made it. Only
things that are the same when the same inputs are rebuilt in the same checkout and environment go in: no
timestamp, no host name, no absolute temp paths, so stats.json stays byte-identical on a rebuild. Nothing here
raises for a missing git, a missing package or a missing file: those are recorded as None.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PACKAGES = ("legibility", "torch", "transformers", "trl", "peft", "datasets", "math-verify", "pysbd")


def _git(cwd: Path, *args: str) -> str | None:
    """stdout of a read-only git command, or None (no git, not a checkout, timeout)."""
    try:
        # --no-optional-locks: `status` must not rewrite the index of a checkout others are working in
        r = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def git_state(file: str | Path | None = None) -> dict[str, Any]:
    """{"commit", "dirty"} of the git checkout that tracks `file` (default: this package's code); both None when
    the file is not tracked by a checkout (an installed wheel, a copied tree) or git is unavailable.

    dirty: tracked files differ from the commit (untracked files, such as run outputs, do not count)."""
    path = Path(file) if file is not None else Path(__file__).resolve().parent / "__init__.py"
    cwd = path.parent
    none: dict[str, Any] = {"commit": None, "dirty": None}
    if not cwd.is_dir() or _git(cwd, "ls-files", "--error-unmatch", path.name) is None:
        return none
    commit = _git(cwd, "rev-parse", "HEAD")
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return none
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions (from metadata: nothing is imported); None for a missing one."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def sha256_file(path: str | Path) -> str | None:
    """Hex sha256 of a file's bytes, or None when it is not a readable file."""
    h = hashlib.sha256()
    try:
        with Path(path).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _plain(config: dict[str, Any] | BaseModel) -> dict[str, Any]:
    """The config as JSON values (a model as dumped, a dict through a JSON round trip)."""
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    return json.loads(json.dumps(config, default=str))


def provenance(config: dict[str, Any] | BaseModel, inputs: Sequence[str | Path], seed: int) -> dict[str, Any]:
    """The record of what made an output: git commit and dirty flag, package and Python versions, each input
    file as given with its sha256 and size, the seed and the resolved config. Deterministic (see the module doc)."""
    files = []
    for p in inputs:
        path = Path(p)
        files.append(
            {
                "path": str(p),
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size if path.is_file() else None,
            }
        )
    return {
        "git": git_state(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "inputs": files,
        "seed": seed,
        "config": _plain(config),
    }
