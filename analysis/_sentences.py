"""Plain sentences that answer the paper's questions, formatted from the summary's numbers.

Gains are differences of test accuracy (at the best validation epoch of each method's best
trial) in percentage points. A missing baseline is said out loud rather than skipped.
"""

from __future__ import annotations

import math

import pandas as pd

from ._summary import NoiseCurve, best_per_group

TIE_POINTS = 0.05  # below this a difference prints as 0.0: call it a match


def sci(x: float) -> str:
    """3e-05 -> '3e-5', 1.5e-4 -> '1.5e-4': short enough for a sentence."""
    mantissa, exp = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def describe(row: pd.Series) -> str:
    """A trial's init in words: 'GHN + noise beta=3e-5 + orth', 'random init'."""
    if row["init"] != "ghn":
        return "random init" if row["init"] == "random" else str(row["init"])
    parts = ["GHN"]
    if pd.notna(row["beta"]) and row["beta"] > 0:
        parts.append(f"noise beta={sci(row['beta'])}")
    if pd.notna(row["orth"]) and bool(row["orth"]):
        parts.append("orth")
    return " + ".join(parts) if len(parts) > 1 else "GHN without post-processing"


def _versus(gain: float) -> str:
    if abs(gain) < TIE_POINTS:
        return "matches random init"
    return f"{'beats' if gain > 0 else 'trails'} random init by {abs(gain):.1f} points"


def _unfinished(row: pd.Series) -> str:
    return "" if row["complete"] else f" (best trial {row['status'].replace('_', ' ')})"


def arch_sentences(arch: str, comp: pd.DataFrame, overall: pd.Series | None,
                   curve: NoiseCurve | None) -> list[str]:
    """What one architecture's numbers say."""
    rows = comp[comp["arch"] == arch].set_index("method")
    out = []
    if overall is not None:
        out.append(f"For {arch}, the best configuration is {describe(overall)} at "
                   f"lr={overall['lr']:.3g}: {pct(overall['best_val_acc'])} validation, "
                   f"{pct(overall['test_acc_at_best'])} test accuracy "
                   f"(trial {overall['trial_id']}){_unfinished(overall)}.")
    if "random" not in rows.index or pd.isna(rows.loc["random", "test_acc_at_best"]):
        out.append(f"For {arch}, no random-init trial has an accuracy yet: no gain over random "
                   "can be computed.")
    else:
        rand = rows.loc["random", "test_acc_at_best"]
        for method in ("ghn+pp", "ghn"):
            if method in rows.index and pd.notna(rows.loc[method, "gain_points"]):
                row = rows.loc[method]
                out.append(f"For {arch}, {describe(row)} {_versus(row['gain_points'])} "
                           f"({pct(row['test_acc_at_best'])} vs {pct(rand)} test accuracy)"
                           f"{_unfinished(row)}.")
    if {"ghn", "ghn+pp"} <= set(rows.index):
        delta = 100 * (rows.loc["ghn+pp", "test_acc_at_best"] - rows.loc["ghn", "test_acc_at_best"])
        if not math.isnan(delta):
            out.append(f"For {arch}, post-processing changes GHN's test accuracy by "
                       f"{delta:+.1f} points.")
    out += _noise_sentence(arch, curve)
    return out


def _noise_sentence(arch: str, curve: NoiseCurve | None) -> list[str]:
    if curve is None or curve.points.empty:
        return []
    best = best_per_group(curve.points.assign(_k=0), keys=("_k",)).iloc[0]
    refs = [f"{label} {pct(curve.refs[m][0])}" for m, label in
            (("ghn", "without noise"), ("random", "random init")) if m in curve.refs]
    tail = f"; {', '.join(refs)}" if refs else ""
    return [f"For {arch} at lr≈{curve.lr:.2g}, the best noise strength is beta={sci(best['beta'])}"
            f" ({pct(best['test_acc_at_best'])} test accuracy{tail})."]


def trend_sentence(comp: pd.DataFrame) -> list[str]:
    """Does the benefit shrink across architectures? Largest and smallest GHN gain."""
    ghn = comp[comp["method"].isin(["ghn", "ghn+pp"]) & comp["gain_points"].notna()]
    gains = ghn.groupby("arch")["gain_points"].max().sort_values(ascending=False)
    if len(gains) < 2:
        return []
    hi, lo = gains.index[0], gains.index[-1]
    if gains[hi] - gains[lo] < TIE_POINTS:
        return [f"The gain of GHN (+ post-processing) over random init is the same "
                f"({gains[hi]:+.1f} points) for {', '.join(gains.index)}."]
    return [f"The gain of GHN (+ post-processing) over random init is largest for {hi} "
            f"({gains[hi]:+.1f} points) and smallest for {lo} ({gains[lo]:+.1f} points)."]


def answers(comp: pd.DataFrame, noise: dict[str, NoiseCurve | None],
            df: pd.DataFrame) -> list[str]:
    """All sentences of the report, per architecture then across them."""
    best = best_per_group(df, keys=("arch",)).set_index("arch")
    out = []
    for arch in sorted(df["arch"].dropna().unique()):
        overall = best.loc[arch] if arch in best.index else None
        out += arch_sentences(arch, comp, overall, noise.get(arch))
    return out + trend_sentence(comp)
