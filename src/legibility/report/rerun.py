"""Report section 4, How to rerun: the stages' provenance (commit, packages, seed, input hashes) and the config."""

from __future__ import annotations

from typing import Any

import yaml

from legibility.report.doc import DASH, Code, NotRun, Para, Section, Table, fmt


def stages(res: Any) -> dict[str, dict[str, Any]]:
    """Provenance per stage, from the files that carry it."""
    out = {}
    for stage, src in (("pairs", res.pairs_stats), ("train", res.train_summary), ("eval", res.eval_summary)):
        prov = src.get("provenance") if isinstance(src, dict) else None
        if isinstance(prov, dict):
            out[stage] = prov
    return out


def _commit(prov: dict[str, Any]) -> str:
    git = prov.get("git") or {}
    commit = git.get("commit")
    if not commit:
        return "not a git checkout"
    return commit + (" (uncommitted changes)" if git.get("dirty") else "")


def section(res: Any) -> Section:
    s = Section("rerun", "How to rerun")
    prov = stages(res)
    cfg_file = res.files.get("config")
    if not prov and not res.config:
        return s.add(
            NotRun(
                "not run: no provenance (pairs/stats.json, train/summary.json, eval/summary.json) and no "
                "config.yaml in the run folder"
            )
        )
    if prov:
        rows = [[st, _commit(p), str(p.get("python") or DASH), fmt(p.get("seed"))] for st, p in prov.items()]
        s.add(Table(["stage", "git commit", "python", "seed"], rows, "what made each stage's outputs"))
        names = sorted({k for p in prov.values() for k in (p.get("packages") or {})})
        rows = [[n, *(str((p.get("packages") or {}).get(n) or DASH) for p in prov.values())] for n in names]
        s.add(Table(["package", *prov], rows, "package versions"))
        rows = []
        for st, p in prov.items():
            for f in p.get("inputs") or []:
                sha = f.get("sha256")
                rows.append([st, str(f.get("path")), sha[:16] + "…" if sha else "missing", fmt(f.get("bytes"))])
        if rows:
            s.add(Table(["stage", "input", "sha256", "bytes"], rows, "input files (check with `sha256sum`)"))
        commits = {(p.get("git") or {}).get("commit") for p in prov.values()} - {None}
        pins = {n: v for p in prov.values() for n, v in (p.get("packages") or {}).items() if v and n != "legibility"}
        steps = []
        if len(commits) == 1:
            steps.append(f"git checkout {commits.pop()}")
        elif commits:
            steps.append("# the stages ran at different commits (table above): check out each stage's own")
        if pins:
            steps.append(
                " \\\n    ".join(["pip install", *(f"'{n}=={v.split('+')[0]}'" for n, v in sorted(pins.items()))])
            )
            steps.append("pip install -e .")
        run = str(res.config.get("run_dir") or res.name)
        cfg = f"{run}/{cfg_file}" if cfg_file else "config.yaml"
        steps += [
            f"legibility run {cfg} --out {run}-rerun  # every stage, into a new folder",
            f"legibility status {run}  # this run: each stage's state, and what changed since it ran",
        ]
        s.add(
            Para(
                "Run from the repository root (the config's data paths are relative to it). The same config and "
                "seed rebuild byte-identical pair files; training and generation on other hardware can differ in "
                "the last digits. `--only STAGE` reruns one stage (problems, traces, pairs, train, generate, "
                "eval, report)."
            ),
            Code("\n".join(steps), "commands"),
        )
    if res.config:
        text = yaml.safe_dump(res.config, sort_keys=False, allow_unicode=True)
        s.add(Code(text, f"the resolved config ({cfg_file})"))
    else:
        s.add(NotRun("no config.yaml in the run folder or train/: the config each stage resolved is in its provenance"))
    if res.files:
        s.add(Para("Files read: " + ", ".join(f"`{v}`" for v in res.files.values()) + "."))
    return s
