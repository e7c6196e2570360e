"""report.md: state of the sweep, the findings, the answers, the tables behind each figure, and the
gaps."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from contract import TrialStatus

from ._data import Sweep
from ._sentences import init_name, pct, sci
from ._stats import estimate
from ._summary import METHOD_LABELS, NoiseCurve, best_per_group, repeats_of

STAMP = "%Y-%m-%d %H:%M UTC"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub pipe table; empty cells for missing values."""
    def cell(v: object) -> str:
        return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _acc(x: object) -> str | None:
    return None if x is None or pd.isna(x) else pct(float(x))


def _state(sweep: Sweep, df: pd.DataFrame) -> list[str]:
    counts = df["status"].value_counts()
    parts = [f"{counts[s]} {s.label}" for s in TrialStatus if s in counts]
    state = ("**State: snapshot** — the sweep is still running (or was interrupted); numbers "
             "will change." if sweep.in_progress else "**State: finished** — the sweep has "
             "ended.")
    return [f"# Sweep report: {sweep.name}", "",
            f"Source: {sweep.source}. Generated {time.strftime(STAMP, time.gmtime())}.",
            "", state, "", f"Trials: {len(df)} ({', '.join(parts) or 'none yet'}){_split(df)}.",
            ""]


def _split(df: pd.DataFrame) -> str:
    repeats = int(df["repeat_of"].notna().sum())
    return f"; {len(df) - repeats} in the search, {repeats} repeats" if repeats else ""


def _best_table(df: pd.DataFrame) -> str:
    best = best_per_group(df, keys=("arch",))
    rows = [[r["arch"], init_name(r), f"{r['lr']:.3g}", _acc(r["best_val_acc"]),
             _acc(r["test_acc_at_best"]), f"{r['best_epoch']:.0f}/{r['epochs_run']:.0f}",
             r["status"].replace("_", " "), r["trial_id"]] for _, r in best.iterrows()]
    return table(["arch", "init", "lr", "best val acc", "test acc at best val", "epoch (best/run)",
                  "status", "trial"], rows)


def _mean_std(mean: float, std: float, n: int) -> str | None:
    if not n:
        return None
    return f"{pct(mean)} ± {100 * std:.1f} ({n})" if n >= 2 else f"{pct(mean)} (1)"


def _interval(lo: float, hi: float, points: bool = False) -> str | None:
    if pd.isna(lo):
        return None
    if points:
        return f"{lo:+.1f} to {hi:+.1f}"
    return f"{100 * max(lo, 0.0):.1f}–{pct(min(hi, 1.0))}"  # an accuracy stays in [0, 100]%


def _comparison_table(comp: pd.DataFrame) -> str:
    rows = [[r["arch"], METHOD_LABELS.get(r["method"], r["method"]), init_name(r),
             f"{r['lr']:.3g}", _acc(r["best_val_acc"]), _acc(r["test_acc_at_best"]),
             _mean_std(r["test_mean"], r["test_std"], r["n_seeds"]),
             _interval(r["test_lo"], r["test_hi"]),
             None if pd.isna(r["gain_points"]) or r["method"] == "random"
             else f"{r['gain_points']:+.1f}" + ("" if r["gain_n"] else " (single runs)"),
             _interval(r["gain_lo"], r["gain_hi"], points=True),
             r["status"].replace("_", " "), r["trial_id"]]
            for _, r in comp.iterrows()]
    return table(["arch", "method", "config", "lr", "search: best val acc", "search: test acc",
                  "repeats: test acc, mean ± std (seeds)", "95% interval",
                  "gain over random (points)", "gain 95% interval (paired)", "status", "trial"],
                 rows)


def _repeats_table(df: pd.DataFrame) -> list[str]:
    """Every repeated configuration, with what its further seeds measured."""
    originals = df[df["trial_id"].isin(df["repeat_of"].dropna())]
    if originals.empty:
        return ["No configuration was repeated with further seeds (`--repeats 0`, or the "
                "sweep has not reached its repeats yet): every number above is one run."]
    rows = []
    for _, r in originals.sort_values(["arch", "method", "trial_id"]).iterrows():
        e = estimate(repeats_of(df, r["trial_id"]).values())
        rows.append([r["arch"], METHOD_LABELS.get(r["method"], r["method"]), init_name(r),
                     f"{r['lr']:.3g}", r["trial_id"], _acc(r["test_acc_at_best"]),
                     _mean_std(e.mean, e.std, e.n), _interval(e.lo, e.hi)])
    return ["Each configuration the search chose (the best of its architecture and init "
            "method, and every baseline) run again with further seeds, which change the "
            "model's init, the post-processing noise, the data order and which n shots each "
            "class gets; validation and test images stay fixed.", "",
            table(["arch", "method", "config", "lr", "search trial", "search: test acc",
                   "repeats: test acc, mean ± std (seeds)", "95% interval"], rows)]


def _noise_table(noise: dict[str, NoiseCurve | None]) -> str:
    rows = []
    for arch, curve in noise.items():
        if curve is None:
            continue
        for _, r in curve.points.iterrows():
            rows.append([arch, f"{curve.lr:.3g}", f"{r['lr']:.3g}", sci(r["beta"]),
                         bool(r["orth"]) if pd.notna(r["orth"]) else None,
                         _acc(r["test_acc_at_best"]), r["status"].replace("_", " ")])
        for method, (value, inside) in curve.refs.items():
            rows.append([arch, f"{curve.lr:.3g}", "" if inside else "any",
                         f"reference: {METHOD_LABELS[method]}", None, _acc(value), ""])
    return table(["arch", "best lr", "trial lr", "beta", "orth", "test acc", "status"], rows)


def _asha(acct: pd.DataFrame) -> list[str]:
    total = acct[acct["arch"] == "all"].iloc[0]
    rows = [[r["arch"], int(r["trials"]), int(r["epochs_spent"]), int(r["epochs_if_all_ran"]),
             None if pd.isna(r["saved_pct"]) else f"{r['saved_pct']:.0f}%"]
            for _, r in acct.iterrows()]
    saved = "" if pd.isna(total["saved_pct"]) else f" ({total['saved_pct']:.0f}% saved)"
    return [f"ASHA ran {int(total['epochs_spent'])} of the {int(total['epochs_if_all_ran'])} "
            f"epochs that every trial run to the end would have cost{saved}.", "",
            table(["arch", "trials", "epochs spent", "epochs if all ran", "saved"], rows)]


def _provenance(sweep: Sweep) -> list[str]:
    """Code, package versions and device: the driver's (parent run) and the trials' (each run's
    own), a value per trial count where the trials differ."""
    keys = sorted(set(sweep.provenance).union(*(t.provenance for t in sweep.trials)))
    if not keys:
        return ["No provenance tags (runs from before they were recorded, or Ray results)."]
    rows = []
    for key in keys:
        counts = Counter(t.provenance.get(key) for t in sweep.trials)
        if len(counts) == 1:
            value = next(iter(counts))
            trials = "" if value is None else f"{value} (all)"
        else:
            trials = "; ".join(f"{'none' if v is None else v} ({n})"
                               for v, n in counts.most_common())
        rows.append([f"`{key}`", sweep.provenance.get(key), trials])
    return ["Which code, packages and machine produced the numbers (MLflow tags of the parent "
            "run, from the sweep's driver, and of each trial's run, from its node).", "",
            table(["tag", "driver", "trials (count)"], rows)]


def _gaps(sweep: Sweep, df: pd.DataFrame) -> list[str]:
    out = [f"- {note}" for note in sweep.notes]
    if not (df["status"] == TrialStatus.FINISHED).any():
        out.append("- No trial has run to its last epoch yet: every best value is provisional.")
    no_acc = df[df["best_val_acc"].isna()]
    if not no_acc.empty:
        out.append(f"- {len(no_acc)} trial(s) have no val/acc (left out of every best value): "
                   + ", ".join(f"{r.trial_id} ({r.status})" for r in no_acc.itertuples()))
    for status, why in ((TrialStatus.FAILED, "failed"),
                        (TrialStatus.DIVERGED, "diverged (loss not finite)")):
        bad = df[df["status"] == status]
        if not bad.empty:
            out.append(f"- {len(bad)} trial(s) {why}, shown as grey crosses in the heatmaps: "
                       + ", ".join(bad["trial_id"]))
    for col in ("lr", "arch", "init"):
        n = int(df[col].isna().sum())
        if n:
            out.append(f"- {n} trial(s) have no `{col}` in their params: not placed in the plots.")
    return out or ["- none"]


def render(sweep: Sweep, df: pd.DataFrame, *, comp: pd.DataFrame,
           noise: dict[str, NoiseCurve | None], acct: pd.DataFrame, sentences: list[str],
           figures: list[str], findings: Sequence[str] = ()) -> str:
    """The whole report.md."""
    lines = _state(sweep, df)
    if findings:
        lines += ["## Findings", "", *[p + "\n" for p in findings]]
    lines += ["## Answers", "", *[f"- {s}" for s in sentences or ["No accuracy logged yet."]], ""]
    lines += ["## Best configuration per architecture", "", _best_table(df), ""]
    lines += ["## Best trial per init method", "", "Chosen by validation accuracy among the "
              "search's trials; test accuracy at that trial's best validation epoch. The "
              "repeats' columns measure the chosen configuration on further seeds; the gain "
              "over random init is paired seed by seed (Student's t interval), or from the "
              "two single runs when there are no repeats.", "",
              _comparison_table(comp), "", "![best test accuracy per init](gains.png)", ""]
    lines += ["## Repeats", "", *_repeats_table(df), ""]
    lines += ["## Accuracy against noise strength", "", "GHN trials with beta > 0 within a "
              "factor of 2 of the architecture's best GHN learning rate; hollow markers were "
              "stopped early.", "", "![accuracy vs beta](noise_vs_beta.png)", "",
              _noise_table(noise), ""]
    lines += ["## Validation accuracy over noise strength and learning rate", "",
              "![heatmaps](heatmaps.png)", "", "## Learning curves", "",
              "![learning curves](learning_curves.png)", ""]
    lines += ["## ASHA accounting", "", *_asha(acct), "", "![ASHA accounting](asha.png)", ""]
    lines += ["## Provenance", "", *_provenance(sweep), ""]
    lines += ["## Gaps and notes", "", *_gaps(sweep, df), ""]
    missing = [f for f in figures if f"({f})" not in "\n".join(lines)]
    lines += [f"![{f}]({f})" for f in missing]
    return "\n".join(lines) + "\n"
