"""Provenance: what produced an output, recorded without ever failing and without volatile fields."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import MATH500

from legibility.config import PairsConfig
from legibility.provenance import PACKAGES, git_state, package_versions, provenance, sha256_file


def test_provenance_records_inputs_config_and_versions(tmp_path: Path) -> None:
    missing = tmp_path / "gone.jsonl"
    cfg = PairsConfig(val_fraction=0.3)
    prov = provenance(cfg, [MATH500, missing], seed=7)
    assert prov["inputs"] == [
        {"path": str(MATH500), "sha256": hashlib.sha256(MATH500.read_bytes()).hexdigest(),
         "bytes": MATH500.stat().st_size},
        {"path": str(missing), "sha256": None, "bytes": None},
    ]  # fmt: skip
    assert prov["seed"] == 7 and prov["config"] == cfg.model_dump(mode="json")
    assert set(prov["packages"]) == set(PACKAGES)
    assert prov["packages"]["pysbd"] and prov["packages"]["legibility"]  # installed here
    assert re.fullmatch(r"3\.\d+\.\d+\S*", prov["python"])
    assert provenance({"a": Path("x"), "b": [1, 2]}, [], 0)["config"] == {"a": "x", "b": [1, 2]}


def test_provenance_is_deterministic_and_has_no_clock() -> None:
    a = json.dumps(provenance(PairsConfig(), [MATH500], 1), sort_keys=True)
    assert a == json.dumps(provenance(PairsConfig(), [MATH500], 1), sort_keys=True)
    assert not re.search(r"time|date|host", a, re.I)
    assert not re.search(r"20\d\d-\d\d-\d\d", a)


def test_missing_packages_are_none() -> None:
    assert package_versions(["pysbd", "no-such-package-xyz"]) == {
        "pysbd": package_versions(["pysbd"])["pysbd"],
        "no-such-package-xyz": None,
    }
    assert sha256_file(Path("/nonexistent/file")) is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_of_a_checkout(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args]
        return subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD").strip()
    assert git_state(tmp_path / "a.py") == {"commit": head, "dirty": False}
    (tmp_path / "untracked.txt").write_text("run output\n")  # untracked files do not make it dirty
    assert git_state(tmp_path / "a.py") == {"commit": head, "dirty": False}
    assert git_state(tmp_path / "untracked.txt") == {"commit": None, "dirty": None}  # not the checkout's code
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path / "a.py") == {"commit": head, "dirty": True}


def test_git_state_of_this_package() -> None:
    state = git_state()
    if (Path(__file__).resolve().parents[1] / ".git").exists():  # a checkout (CI, development), not a wheel
        assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and isinstance(state["dirty"], bool)
    else:
        assert state == {"commit": None, "dirty": None}


def test_git_state_never_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f.py").write_text("")
    assert git_state(tmp_path / "f.py") == {"commit": None, "dirty": None}  # not a checkout
    assert git_state(tmp_path / "nowhere" / "f.py") == {"commit": None, "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert git_state() == {"commit": None, "dirty": None}
    assert provenance(PairsConfig(), [], 0)["git"] == {"commit": None, "dirty": None}
