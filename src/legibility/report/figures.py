"""The report's figures as PNG bytes: matplotlib's object API on the Agg canvas (no pyplot, so a notebook's
backend is never switched), one style, fixed metadata, so the same inputs give the same bytes.

Each function takes plain frames or lists and returns PNG bytes, or None when there is nothing to draw.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

WIDTH = 7.0  # inches; shown 700 px wide
DPI = 144  # saved sharper than shown
PALETTE = ["#3b6ea8", "#e07b39", "#4a9d5b", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
GREY = "#6b7280"
STYLE = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs everywhere
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 8.5,
    "axes.edgecolor": "#9ca3af",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "svg.hashsalt": "legibility-report",
    "path.simplify": False,
}
TAXONOMY_COLORS = {
    "no_readers": "#d1d5db",
    "generator_wrong": "#9ca3af",
    "too_hard": "#c7b8a6",
    "too_easy": "#e5d9b6",
    "ANSWER_LEAKED": "#e9a23b",
    "REASONING_LEGIBLE": "#4a9d5b",
    "ILLEGIBLE": "#c44e52",
}


def colors(names: Sequence[str]) -> dict[str, str]:
    """A colour per name, in the given order (the report passes generators in one order everywhere)."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


@contextmanager
def figure(nrows: int = 1, ncols: int = 1, height: float = 3.0, **kw: object) -> Iterator[tuple[Figure, np.ndarray]]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(WIDTH, height), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, **kw)).ravel()  # type: ignore[arg-type]
        yield fig, axes


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # no Software/date chunks: identical inputs give identical bytes
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


def _max_line(ax: Axes, x: float) -> None:
    """A dashed max_length line, labelled on whichever side has room (call after plotting: reads the limits)."""
    ax.axvline(x, color="#c44e52", linestyle="--", linewidth=1)
    lo, hi = ax.get_xlim()
    right = hi > lo and (x - lo) / (hi - lo) > 0.5
    ax.annotate(
        f"max_length {x:,.0f}",
        xy=(x, 1),
        xycoords=("data", "axes fraction"),
        xytext=(-4 if right else 4, -3),
        textcoords="offset points",
        ha="right" if right else "left",
        va="top",
        fontsize=7,
        color="#c44e52",
        bbox={"fc": "white", "ec": "none", "alpha": 0.85, "pad": 1},
    )


def _integer_y(ax: Axes) -> None:
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


# --------------------------------------------------------------------------------------------------- data


def pair_lengths(
    summary: dict[str, dict[str, dict]],
    max_length: int | None,
    before: dict[str, list[int]],
    lengths: dict[str, list[int]] | None = None,
) -> bytes | None:
    """Token lengths of prompt+completion against max_length.

    With per-pair `lengths` (side -> token counts) a histogram; otherwise the stored summary (min-max bar, p95 and
    median marks per split and side) beside a histogram of the token counts recorded for the cut CoTs before the
    cut (`before`, side -> counts), which is what the long-pair policy had to deal with."""
    if not summary and not before and not lengths:
        return None
    panels = int(bool(lengths or summary)) + int(bool(before))
    with figure(1, panels, height=2.8) as (fig, axes):
        ax = axes[0]
        if lengths:
            bins = np.histogram_bin_edges([v for vs in lengths.values() for v in vs], bins=40)
            for i, (side, vs) in enumerate(lengths.items()):
                ax.hist(vs, bins=bins, alpha=0.6, color=PALETTE[i], label=side)
            ax.set(xlabel="tokens (prompt + completion)", ylabel="pairs", title="pair lengths")
            ax.legend(loc="upper left")
            _integer_y(ax)
            if max_length:
                _max_line(ax, max_length)
        elif summary:
            labels = []
            for i, (label, s) in enumerate(summary.items()):
                labels.append(f"{label} ({s.get('n', 0)})")
                if s.get("min") is None:
                    continue
                ax.plot([s["min"], s["max"]], [i, i], color=PALETTE[0], linewidth=5, alpha=0.35, solid_capstyle="butt")
                ax.plot([s["median"]], [i], "o", color=PALETTE[0], markersize=5)
                ax.plot([s["p95"]], [i], "|", color=PALETTE[1], markersize=11, markeredgewidth=2)
            ax.set_yticks(range(len(labels)), labels)
            ax.set_ylim(-0.6, len(labels) - 0.4)
            ax.invert_yaxis()
            ax.grid(axis="y", visible=False)
            ax.set(xlabel="tokens (prompt + completion)", title="min–max, ● median, | p95")
            top = max([s["max"] for s in summary.values() if s.get("max") is not None] + [max_length or 0])
            ax.set_xlim(right=top * 1.06)
            if max_length:
                _max_line(ax, max_length)
        if before:
            ax = axes[-1]
            allv = [v for vs in before.values() for v in vs]
            bins = np.histogram_bin_edges(allv + ([max_length] if max_length else []), bins=24)
            for i, (side, vs) in enumerate(before.items()):
                ax.hist(vs, bins=bins, alpha=0.65, color=PALETTE[i + 2], label=f"{side} ({len(vs)})")
            ax.set(xlabel="tokens before the cut", ylabel="CoTs", title="cut CoTs, before the cut")
            ax.legend(loc="upper right")
            _integer_y(ax)
            if max_length:
                _max_line(ax, max_length)
        return png(fig)


# ----------------------------------------------------------------------------------------------- training


def training_curves(log: pd.DataFrame) -> bytes | None:
    """Loss, normalized reward margin and accuracy vs step: training logs as lines, evaluations (from step 0)
    as marked lines, and the model's own preference on the validation pairs (log-probs, per token)."""
    if log.empty or "step" not in log:
        return None
    train = log[log["kind"] == "train"].sort_values("step")
    ev = log[log["kind"] == "eval"].sort_values("step")
    panels = [
        ("loss", "loss", "eval_loss", None),
        ("reward margin (norm.)", "rewards_norm/margins", "eval_rewards_norm/margins", None),
        (
            "reward accuracy (norm.)",
            "rewards_norm/accuracies",
            "eval_rewards_norm/accuracies",
            "eval_logps_norm/accuracies",
        ),
    ]
    with figure(1, 3, height=2.5) as (fig, axes):
        for ax, (title, tk, ek, pk) in zip(axes, panels, strict=True):
            if tk in train and train[tk].notna().any():
                ax.plot(train["step"], train[tk], color=PALETTE[0], linewidth=1.4, label="train")
            if ek in ev and ev[ek].notna().any():
                ax.plot(ev["step"], ev[ek], "o-", color=PALETTE[1], linewidth=1.2, markersize=4, label="eval")
            if pk and pk in ev and ev[pk].notna().any():
                ax.plot(
                    ev["step"],
                    ev[pk],
                    "s--",
                    color=PALETTE[2],
                    linewidth=1,
                    markersize=3.5,
                    label="eval: own preference",
                )
            if "accuracies" in tk:
                ax.set_ylim(-0.03, 1.03)
            ax.set(title=title, xlabel="step")
            ax.xaxis.get_major_locator().set_params(integer=True)
        handles = {h.get_label(): h for ax in axes for h in ax.get_lines()}
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3)
        return png(fig)


def transform_bars(rows: pd.DataFrame, first_step: int | None, last_step: int | None) -> bytes | None:
    """Per transform: the last evaluation's normalized reward accuracy, beside the model's own preference at
    step 0 (the base model) and at the last evaluation."""
    if rows.empty:
        return None
    series = [
        ("reward_acc", f"reward accuracy, step {last_step}", PALETTE[1]),
        ("pref_0", f"own preference, step {first_step}", PALETTE[2]),
        ("pref_last", f"own preference, step {last_step}", "#9bc7a4"),
    ]
    series = [s for s in series if s[0] in rows and rows[s[0]].notna().any()]
    with figure(height=0.32 * len(rows) + 1.1) as (fig, axes):
        ax = axes[0]
        y = np.arange(len(rows))
        h = 0.8 / max(len(series), 1)
        for i, (key, label, color) in enumerate(series):
            ax.barh(y + (i - (len(series) - 1) / 2) * h, rows[key].fillna(0), height=h, color=color, label=label)
        ax.set_yticks(y, [f"{t} (n={n})" for t, n in zip(rows["transform"], rows["n"], strict=True)])
        ax.invert_yaxis()
        ax.axvline(0.5, color=GREY, linewidth=0.8, linestyle=":")
        ax.set(xlim=(0, 1), xlabel="share of validation pairs with chosen above rejected (per token)")
        ax.grid(axis="y", visible=False)
        fig.legend(loc="outside upper center", ncol=3)
        return png(fig)


# ------------------------------------------------------------------------------------------------ results


def _ci_err(df: pd.DataFrame, est: str = "accuracy") -> np.ndarray:
    lo = (df[est] - df["low"]).clip(lower=0).fillna(0)
    hi = (df["high"] - df[est]).clip(lower=0).fillna(0)
    return np.vstack([lo.to_numpy(float), hi.to_numpy(float)])


def accuracy(acc: pd.DataFrame, paired: pd.DataFrame, gens: Sequence[str]) -> bytes | None:
    """Task accuracy with 95% intervals per benchmark and generator; beside it the paired difference."""
    if acc.empty:
        return None
    benches = list(dict.fromkeys(acc["benchmark"]))
    has_pair = not paired.empty and paired["diff"].notna().any()
    cmap = colors(gens)
    ratios = [3, 2] if has_pair else None
    with figure(1, 2 if has_pair else 1, height=0.45 * len(benches) + 1.2, width_ratios=ratios) as (fig, axes):
        ax = axes[0]
        off = 0.5 / max(len(gens), 1)
        for i, g in enumerate(gens):
            d = acc[acc["generator"] == g].set_index("benchmark").reindex(benches).reset_index()
            y = np.arange(len(benches)) + (i - (len(gens) - 1) / 2) * off
            ax.errorbar(d["accuracy"], y, xerr=_ci_err(d), fmt="o", color=cmap[g], capsize=2.5, markersize=5, label=g)
        ax.set_yticks(range(len(benches)), benches)
        ax.invert_yaxis()
        ax.set(xlim=(-0.02, 1.02), xlabel="accuracy (flexible), 95% interval", title="task accuracy")
        fig.legend(loc="outside upper center", ncol=len(gens))
        if has_pair:
            ax = axes[1]
            d = paired.set_index("benchmark").reindex(benches).reset_index()
            ax.errorbar(
                d["diff"], range(len(benches)), xerr=_ci_err(d, "diff"), fmt="D", color=GREY, capsize=2.5, markersize=4
            )
            ax.axvline(0, color="#c44e52", linewidth=0.8)
            ax.set_yticks(range(len(benches)), benches)
            ax.invert_yaxis()
            a, b = (v if isinstance(v := paired[k].iloc[0], str) else k for k in ("a", "b"))
            ax.set(xlabel=f"{a} − {b} (paired, 95% interval)", title="paired difference")
        return png(fig)


def reader_order(df: pd.DataFrame, gens: Sequence[str]) -> pd.DataFrame:
    """Readers' rows by reader, then C1, C4, C2, C2 prefill, then generator (the figure's and the table's order)."""
    order = {"c1": 0, "c4": 1, "c2": 2, "c2_prefill": 3}
    key = df.assign(_o=df["condition"].map(order).fillna(9), _g=df["generator"].map({g: i for i, g in enumerate(gens)}))
    key["_g"] = key["_g"].fillna(-1)
    return key.sort_values(["reader", "_o", "_g"], kind="stable").drop(columns=["_o", "_g"]).reset_index(drop=True)


def readers(readers_df: pd.DataFrame, uplift: pd.DataFrame, gens: Sequence[str]) -> bytes | None:
    """Reader accuracy per condition (C2 per generator) with intervals; beside it P(C2) − P(C4) per generator."""
    if readers_df.empty:
        return None
    d = reader_order(readers_df, gens)
    d["generator"] = d["generator"].fillna("")
    cmap = colors(gens)
    up = uplift[uplift["generator"].isin(gens)] if not uplift.empty else uplift
    with figure(
        1, 2 if not up.empty else 1, height=0.22 * len(d) + 1.2, width_ratios=[3, 2] if not up.empty else None
    ) as (fig, axes):
        ax = axes[0]
        y = np.arange(len(d))
        col = [cmap.get(g, GREY) for g in d["generator"]]
        ax.barh(y, d["accuracy"].fillna(0), color=col, height=0.7, alpha=0.9)
        ax.errorbar(d["accuracy"], y, xerr=_ci_err(d), fmt="none", ecolor="#374151", capsize=2, linewidth=0.8)
        labels = [
            f"{r} · {c}" + (f" · {g}" if g else "")
            for r, c, g in zip(d["reader"], d["condition"], d["generator"], strict=True)
        ]
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set(xlim=(0, 1), xlabel="reader accuracy, 95% interval", title="readers per condition")
        if not up.empty:
            ax = axes[1]
            rs = list(dict.fromkeys(up["reader"]))
            h = 0.8 / max(len(gens), 1)
            for i, g in enumerate(gens):
                u = up[up["generator"] == g].set_index("reader").reindex(rs)
                ax.barh(
                    np.arange(len(rs)) + (i - (len(gens) - 1) / 2) * h,
                    u["uplift"].fillna(0),
                    height=h,
                    color=cmap[g],
                    label=g,
                )
            ax.axvline(0, color=GREY, linewidth=0.8)
            ax.set_yticks(range(len(rs)), rs)
            ax.invert_yaxis()
            ax.grid(axis="y", visible=False)
            ax.set(xlabel="P(C2 right) − P(C4 right)", title="uplift: C2 over C4")
            fig.legend(loc="outside upper center", ncol=len(gens))
        return png(fig)


def taxonomy(tax: pd.DataFrame, parts: Sequence[str]) -> bytes | None:
    """Stacked bars per generator: every filter's count, then the labels, each segment with its count."""
    if tax.empty:
        return None
    with figure(height=0.42 * len(tax) + 1.3) as (fig, axes):
        ax = axes[0]
        y = np.arange(len(tax))
        left = np.zeros(len(tax))
        for part in parts:
            vals = tax[part].fillna(0).to_numpy(float) if part in tax else np.zeros(len(tax))
            ax.barh(
                y,
                vals,
                left=left,
                color=TAXONOMY_COLORS.get(part, GREY),
                label=part,
                height=0.62,
                edgecolor="white",
                linewidth=0.6,
            )
            for yi, (lft, v) in enumerate(zip(left, vals, strict=True)):
                if v > 0:
                    ax.text(lft + v / 2, yi, f"{v:.0f}", ha="center", va="center", fontsize=7, color="#111827")
            left += vals
        ax.set_yticks(y, tax["generator"].fillna("").astype(str))
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        ax.set(xlabel="items (each counted under the first filter that removes it)")
        fig.legend(loc="outside upper center", ncol=4)
        return png(fig)


def legibility_tax(points: pd.DataFrame, gens: Sequence[str]) -> bytes | None:
    """Task accuracy against reader C2 accuracy, one point per generator and reader, with both intervals."""
    if points.empty:
        return None
    cmap = colors(gens)
    markers = "os^Dv<>P"
    readers_ = list(dict.fromkeys(points["reader"]))
    with figure(height=3.4) as (fig, axes):
        ax = axes[0]
        for _, p in points.iterrows():
            m = markers[readers_.index(p["reader"]) % len(markers)]
            xerr = [[max(p["x"] - p["x_low"], 0)], [max(p["x_high"] - p["x"], 0)]] if pd.notna(p["x_low"]) else None
            yerr = [[max(p["y"] - p["y_low"], 0)], [max(p["y_high"] - p["y"], 0)]] if pd.notna(p["y_low"]) else None
            ax.errorbar(
                p["x"],
                p["y"],
                xerr=xerr,
                yerr=yerr,
                fmt=m,
                color=cmap.get(p["generator"], GREY),
                markersize=7,
                capsize=2,
                elinewidth=0.8,
                label=f"{p['generator']} · {p['reader']}",
            )
        ax.plot([0, 1], [0, 1], color="#d1d5db", linewidth=0.8, linestyle=":")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="task accuracy (generator)",
            ylabel="reader C2 accuracy (generator right)",
            title="legibility tax: does accuracy come with readable CoTs?",
        )
        ax.set_aspect("equal", adjustable="box")
        ax.legend(loc="center left", bbox_to_anchor=(1.04, 0.5), title="generator · reader", title_fontsize=7.5)
        return png(fig)


def early_answering(curves: pd.DataFrame, aoc: pd.DataFrame, gens: Sequence[str]) -> bytes | None:
    """Accuracy vs the share of the CoT kept, one panel per reader, one line per generator (AOC in the legend),
    over every CoT; dashed, where the table has it, agreement with the generator's own final answer."""
    if curves.empty:
        return None
    if "cots" in curves:
        curves = curves[curves["cots"].isna() | (curves["cots"] == "all")]
    if not aoc.empty and "cots" in aoc:
        aoc = aoc[(aoc["cots"].isna() | (aoc["cots"] == "all")) & (aoc["measure"].isna() | (aoc["measure"] == "gold"))]
    rs = list(dict.fromkeys(curves["reader"]))
    cmap = colors(gens)
    cols = min(len(rs), 3)
    rows_ = -(-len(rs) // cols)
    with figure(rows_, cols, height=2.6 * rows_, sharey=True) as (fig, axes):
        for ax, r in zip(axes, rs, strict=False):
            for g in gens:
                c = curves[(curves["reader"] == r) & (curves["generator"] == g)].sort_values("fraction")
                if c.empty:
                    continue
                a = aoc[(aoc["reader"] == r) & (aoc["generator"] == g)] if not aoc.empty else aoc
                label = g + (f" (AOC {a['aoc'].iloc[0]:.3f})" if not a.empty and pd.notna(a["aoc"].iloc[0]) else "")
                ax.plot(c["fraction"], c["accuracy"], "o-", color=cmap[g], markersize=3, linewidth=1.3, label=label)
                if "agreement" in c and c["agreement"].notna().any():
                    ax.plot(c["fraction"], c["agreement"], "--", color=cmap[g], linewidth=1.0, alpha=0.8)
            ax.set(title=r, xlabel="share of CoT sentences kept", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
            ax.legend(loc="lower right")
        axes[0].set_ylabel("accuracy")
        for ax in axes[len(rs) :]:
            ax.set_visible(False)
        return png(fig)


def judge_scores(j: pd.DataFrame, gens: Sequence[str]) -> bytes | None:
    """Judge score distributions on the generators' CoTs: rubric legibility and coverage (0-4) as grouped count
    bars, the chunked illegibility mean (1-9) as boxes."""
    if j.empty:
        return None
    j = j[(j.get("transform", "intact") == "intact") & j["error"].isna()] if "error" in j else j
    rubric = j[j["kind"] == "rubric"]
    ill = j[j["kind"] == "illegibility"]
    panels = [p for p in ("legibility", "coverage") if p in rubric and rubric[p].notna().any()]
    has_ill = "mean" in ill and ill["mean"].notna().any()
    n = len(panels) + int(has_ill)
    if n == 0:
        return None
    cmap = colors(gens)
    with figure(1, n, height=2.5) as (fig, axes):
        for ax, metric in zip(axes, panels, strict=False):
            h = 0.8 / max(len(gens), 1)
            for i, g in enumerate(gens):
                v = rubric.loc[rubric["generator"] == g, metric].dropna().round().astype(int)
                counts = v.value_counts().reindex(range(5), fill_value=0)
                ax.bar(
                    np.arange(5) + (i - (len(gens) - 1) / 2) * h,
                    counts,
                    width=h,
                    color=cmap[g],
                    label=g,
                )
            ax.set(title=f"rubric {metric} (0-4)", xlabel="score", ylabel="CoTs")
            ax.set_xticks(range(5))
            ax.grid(axis="x", visible=False)
            _integer_y(ax)
        if has_ill:
            ax = axes[len(panels)]
            data = [ill.loc[ill["generator"] == g, "mean"].dropna().to_numpy(float) for g in gens]
            keep = [(g, d) for g, d in zip(gens, data, strict=True) if len(d)]
            bp = ax.boxplot(
                [d for _, d in keep],
                tick_labels=[g for g, _ in keep],
                patch_artist=True,
                widths=0.5,
                medianprops={"color": "#111827"},
            )
            for patch, (g, _) in zip(bp["boxes"], keep, strict=True):
                patch.set_facecolor(cmap[g])
                patch.set_alpha(0.75)
            ax.set(title="illegibility mean (1-9)", ylim=(0.8, 9.2))
            # Generator names such as "smollm2+adapter" collide side by side in a narrow panel.
            for label in ax.get_xticklabels():
                label.set(rotation=20, horizontalalignment="right")
            ax.grid(axis="x", visible=False)
        handles = [Patch(color=cmap[g], label=g) for g in gens]
        fig.legend(handles=handles, loc="outside upper center", ncol=len(gens))
        return png(fig)
