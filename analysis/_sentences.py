"""Plain sentences that answer the paper's questions, formatted from the summary's numbers.

Gains are differences of test accuracy (at the best validation epoch) in percentage points:
paired over the repeat seeds of each method's chosen configuration, with a 95% interval, and
"not distinguishable" when that interval holds 0; without repeats, the single runs' difference,
said to be no evidence. A missing baseline is said out loud rather than skipped.
"""

from __future__ import annotations

import pandas as pd

from ._stats import paired
from ._summary import NoiseCurve, best_per_group

TIE_POINTS = 0.05  # below this a difference prints as 0.0: call it a match


def sci(x: float) -> str:
    """3e-05 -> '3e-5', 1.5e-4 -> '1.5e-4': short enough for a sentence."""
    mantissa, exp = f"{x:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def init_name(row: pd.Series) -> str:
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


def seeds_phrase(n: float) -> str:
    n = int(n)
    return f"{n} seed{'s' if n != 1 else ''}"


def accuracy_phrase(row: pd.Series) -> str:
    """'52.0% ± 1.0 test accuracy (mean ± std over 3 seeds; 95% interval 49.5-54.5%)'; the
    interval is cut to [0, 100]%, where an accuracy lies."""
    if row["n_seeds"] >= 2:
        return (f"{pct(row['test_mean'])} ± {100 * row['test_std']:.1f} test accuracy (mean ± "
                f"std over {seeds_phrase(row['n_seeds'])}; 95% interval "
                f"{100 * max(row['test_lo'], 0.0):.1f}–{pct(min(row['test_hi'], 1.0))})")
    if row["n_seeds"] == 1:
        return f"{pct(row['test_mean'])} test accuracy (1 repeat seed: no interval)"
    return f"{pct(row['test_acc_at_best'])} test accuracy (the search's single run, no repeats)"


def gain_sentence(arch: str, row: pd.Series) -> str:
    """How a GHN method compares with random init: paired over repeat seeds where it can be."""
    what = f"For {arch}, {init_name(row)} (lr={row['lr']:.3g})"
    gain, n = row["gain_points"], int(row["gain_n"])
    if n >= 2:
        interval = (f"95% interval {row['gain_lo']:+.1f} to {row['gain_hi']:+.1f}, paired over "
                    f"{seeds_phrase(n)}")
        if row["gain_lo"] > 0 or row["gain_hi"] < 0:
            return f"{what} {_versus(gain)} ({interval})."
        return (f"{what} is not distinguishable from random init ({gain:+.1f} points, "
                f"{interval}).")
    if n == 1:
        return (f"{what} differs from random init by {gain:+.1f} points on 1 paired seed: no "
                "interval, not evidence either way (run with --repeats 2 or more).")
    return (f"{what} {_versus(gain)} in the search's single runs; one draw each, no interval: "
            "not evidence either way (run with --repeats 2 or more).")


def arch_sentences(arch: str, comp: pd.DataFrame, overall: pd.Series | None,
                   curve: NoiseCurve | None) -> list[str]:
    """What one architecture's numbers say."""
    rows = comp[comp["arch"] == arch].set_index("method")
    out = []
    if overall is not None:
        out.append(f"For {arch}, the search's best configuration is {init_name(overall)} at "
                   f"lr={overall['lr']:.3g}: {pct(overall['best_val_acc'])} validation, "
                   f"{pct(overall['test_acc_at_best'])} test accuracy "
                   f"(trial {overall['trial_id']}){_unfinished(overall)}.")
    for _, row in rows.iterrows():
        if pd.notna(row["test_acc_at_best"]) or row["n_seeds"]:
            out.append(f"For {arch}, {init_name(row)} (lr={row['lr']:.3g}, chosen by validation "
                       f"accuracy) reaches {accuracy_phrase(row)}{_unfinished(row)}.")
    if "random" not in rows.index or (pd.isna(rows.loc["random", "test_acc_at_best"])
                                      and not rows.loc["random", "n_seeds"]):
        out.append(f"For {arch}, no random-init trial has an accuracy yet: no gain over random "
                   "can be computed.")
    else:
        for method in ("ghn+pp", "ghn"):
            if method in rows.index and pd.notna(rows.loc[method, "gain_points"]):
                out.append(gain_sentence(arch, rows.loc[method]))
    if {"ghn", "ghn+pp"} <= set(rows.index):
        out.append(_postproc_sentence(arch, rows.loc["ghn+pp"], rows.loc["ghn"]))
    out += _noise_sentence(arch, curve)
    return out


def _postproc_sentence(arch: str, pp: pd.Series, ghn: pd.Series) -> str:
    d = paired(pp["seed_acc"], ghn["seed_acc"])
    if d.n >= 2:
        verdict = "changes" if d.excludes_zero else "does not distinguishably change"
        return (f"For {arch}, post-processing {verdict} GHN's test accuracy ({100 * d.mean:+.1f} "
                f"points, 95% interval {100 * d.lo:+.1f} to {100 * d.hi:+.1f}, paired over "
                f"{seeds_phrase(d.n)}).")
    delta = 100 * (pp["test_acc_at_best"] - ghn["test_acc_at_best"])
    return (f"For {arch}, post-processing changes GHN's test accuracy by {delta:+.1f} points in "
            "the search's single runs (no interval).")


def _noise_sentence(arch: str, curve: NoiseCurve | None) -> list[str]:
    if curve is None or curve.points.empty:
        return []
    best = best_per_group(curve.points.assign(_k=0), keys=("_k",)).iloc[0]
    refs = [f"{label} {pct(curve.refs[m][0])}" for m, label in
            (("ghn", "without noise"), ("random", "random init")) if m in curve.refs]
    tail = f"; {', '.join(refs)}" if refs else ""
    return [f"For {arch} at lr≈{curve.lr:.2g}, the search's best noise strength is "
            f"beta={sci(best['beta'])} ({pct(best['test_acc_at_best'])} test accuracy{tail}; "
            "single runs)."]


def trend_sentence(comp: pd.DataFrame) -> list[str]:
    """Does the benefit shrink across architectures? Largest and smallest GHN gain."""
    ghn = comp[comp["method"].isin(["ghn", "ghn+pp"]) & comp["gain_points"].notna()]
    gains = ghn.groupby("arch")["gain_points"].max().sort_values(ascending=False)
    if len(gains) < 2:
        return []
    basis = ("paired means over repeat seeds" if (ghn["gain_n"] >= 2).all()
             else "single runs for some: see the intervals above")
    hi, lo = gains.index[0], gains.index[-1]
    if gains[hi] - gains[lo] < TIE_POINTS:
        return [f"The gain of GHN (+ post-processing) over random init is the same "
                f"({gains[hi]:+.1f} points) for {', '.join(gains.index)} ({basis})."]
    return [f"The gain of GHN (+ post-processing) over random init is largest for {hi} "
            f"({gains[hi]:+.1f} points) and smallest for {lo} ({gains[lo]:+.1f} points; "
            f"{basis})."]


def answers(comp: pd.DataFrame, noise: dict[str, NoiseCurve | None],
            df: pd.DataFrame) -> list[str]:
    """All sentences of the report, per architecture then across them."""
    best = best_per_group(df, keys=("arch",)).set_index("arch")
    out = []
    for arch in sorted(df["arch"].dropna().unique()):
        overall = best.loc[arch] if arch in best.index else None
        out += arch_sentences(arch, comp, overall, noise.get(arch))
    return out + trend_sentence(comp)
