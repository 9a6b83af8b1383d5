"""The CLI end to end on real data: import, stats, grade, pairs build/show, and its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MARKYX, MATH500

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "HF_HUB_OFFLINE": "1"}  # wide: rich wraps tables and errors at 80
    return subprocess.run(
        [sys.executable, "-m", "legibility", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env=env,
    )


def import_markyx(out: Path) -> subprocess.CompletedProcess[str]:
    traces = MARKYX
    problems = str(MATH500)
    return cli("traces", "import", *map(str, traces), "--benchmark", "math", "--problems", problems, "--out", str(out))


def test_help_on_every_command() -> None:
    for cmd in (
        [],
        ["traces"],
        ["traces", "import"],
        ["traces", "stats"],
        ["grade"],
        ["pairs"],
        ["pairs", "build"],
        ["pairs", "show"],
        ["train"],
        ["benchmarks", "load"],
    ):
        r = cli(*cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert "Usage" in r.stdout


def test_one_line_errors(tmp_path: Path) -> None:
    r = cli("traces", "stats", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "missing.jsonl" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("benchmarks", "load", "nope", "x", "--out", str(tmp_path / "p.jsonl"))
    assert r.returncode == 2 and "unknown benchmark" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"id": "x"}\n')
    r = cli("traces", "stats", str(bad))
    assert r.returncode == 2 and "t.jsonl:1" in r.stderr and "Traceback" not in r.stderr
    r = cli("--debug", "traces", "stats", str(bad))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_import_stats_grade(tmp_path: Path) -> None:
    out = tmp_path / "traces.jsonl"
    r = import_markyx(out)
    assert r.returncode == 0, r.stderr
    assert "70 traces" in r.stdout
    r = cli("traces", "stats", str(out))
    assert r.returncode == 0 and "deepseek-reasoner" in r.stdout
    grade = ["grade", "--benchmark", "math", "--problems", str(MATH500)]
    r = cli(*grade, "--id", "test/precalculus/807.json", "--response", "so \\boxed{(3, \\frac{\\pi}{2})}")
    assert r.returncode == 0, r.stderr
    assert "correct   True" in r.stdout
    r = cli(*grade, "--id", "precalculus/807.json", "--response", "\\boxed{(3, \\pi)}")
    assert r.returncode == 2 and "no problem with id" in r.stderr
    r = cli(*grade, "--id", "test/precalculus/807.json", "--response", "\\boxed{(3, \\pi)}")
    assert "correct   False" in r.stdout


@pytest.mark.slow
def test_pairs_build_and_show(tmp_path: Path) -> None:
    out = tmp_path / "traces.jsonl"
    assert import_markyx(out).returncode == 0
    r = cli(
        "pairs",
        "build",
        str(out),
        "--out",
        str(tmp_path / "pairs"),
        "--tokenizer",
        "none",
        "--set",
        "pairs.val_fraction=0.2",
    )
    assert r.returncode == 0, r.stderr
    for name in ("train.jsonl", "val.jsonl", "together_train.jsonl", "together_val.jsonl", "stats.json"):
        assert (tmp_path / "pairs" / name).is_file()
    r = cli("pairs", "show", str(tmp_path / "pairs/train.jsonl"), "--index", "2")
    assert r.returncode == 0, r.stderr
    assert "transform donor_splice_25" in r.stdout and "CoT, corrupted order" in r.stdout
    r = cli("pairs", "show", str(tmp_path / "pairs/train.jsonl"), "--index", "100000")
    assert r.returncode == 2 and "out of range" in r.stderr


def test_levels_all_and_stated_default(tmp_path: Path) -> None:
    """`--levels all` once ended in a traceback, and `benchmarks load --help` stated the wrong default."""
    out = tmp_path / "p.jsonl"
    r = cli("benchmarks", "load", "math", str(MATH500), "--levels", "all", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "500 math problems" in r.stdout
    r = cli("benchmarks", "load", "math", str(MATH500), "--out", str(out))
    assert "367 math problems" in r.stdout  # the default is levels 3-5, as the help says
    help_text = " ".join(cli("benchmarks", "load", "--help").stdout.split())
    assert "default all" not in help_text and "3,4,5" in help_text
    r = cli("benchmarks", "load", "math", str(MATH500), "--levels", "3,x", "--out", str(out))
    assert r.returncode == 2 and "--levels" in r.stderr and "Traceback" not in r.stderr


def test_errors_are_one_line_on_a_narrow_terminal(tmp_path: Path) -> None:
    env_cols = {"COLUMNS": "40"}
    r = subprocess.run(
        [sys.executable, "-m", "legibility", "benchmarks", "load", "math", str(MATH500), "--levels", "9",
         "--out", str(tmp_path / "p.jsonl")],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env_cols},
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr


def test_offline_hub_tokenizer_is_one_line(tmp_path: Path) -> None:
    """`pairs.tokenizer` as a hub id offline once ended in a 134-line traceback."""
    empty = tmp_path / "traces.jsonl"
    empty.write_text("")
    hub_id = "no-such-org/no-such-tokenizer"
    r = cli("pairs", "build", str(empty), "--out", str(tmp_path / "pairs"), "--tokenizer", hub_id)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert line.count("\n") == 0, r.stderr
    assert line.startswith(f"error: pairs.tokenizer '{hub_id}' ") and "local folder" in line and "online" in line


def _sdk_and_hub_failures() -> list[tuple[BaseException, str]]:
    """The real exception classes, as huggingface_hub / transformers and the together SDK raise them."""
    import httpx
    import together
    from huggingface_hub.errors import GatedRepoError

    request = httpx.Request("POST", "https://api.together.test/v1/files")
    gated = OSError("You are trying to access a gated repo.\nMake sure to have access to it.")
    gated.__cause__ = GatedRepoError("403 Client Error", response=httpx.Response(403, request=request))
    auth = together.AuthenticationError("Invalid API key", response=httpx.Response(401, request=request), body=None)
    network = together.APIConnectionError(request=request)
    network.__cause__ = httpx.ConnectError("[Errno -3] Temporary failure in name resolution")
    return [(gated, "gated"), (auth, "TOGETHER_API_KEY"), (network, "could not reach the Together API")]


def test_hub_and_sdk_failures_are_one_line_at_the_boundary(monkeypatch, capsys) -> None:
    """What no inner call named (a hub download inside training, a together SDK call) is still one line at the
    CLI boundary, exit code 2; anything else keeps its traceback."""
    from legibility import cli as cli_module

    for exc, says in _sdk_and_hub_failures():

        def fail(exc: BaseException = exc) -> None:
            raise exc

        monkeypatch.setattr(cli_module, "app", fail)
        monkeypatch.setattr(sys, "argv", ["legibility", "train", "x.yaml"])
        with pytest.raises(SystemExit) as info:
            cli_module.main()
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and err.count("\n") == 0 and says in err, err

    def bug() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_module, "app", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli_module.main()
