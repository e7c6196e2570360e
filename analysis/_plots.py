"""The report's figures. Each function returns a matplotlib `Figure` (no pyplot, no global state),
so tests can count panels and points before the figure is saved.

Accuracies are plotted in percent. Trials that cannot stand for their config (diverged, failed)
are drawn as grey crosses where their config puts them, so a gap is visible rather than silent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullFormatter

from contract import TrialStatus

from ._summary import (
    LR_WINDOW,
    METHOD_LABELS,
    NoiseCurve,
    best_per_group,
    order_methods,
    search_trials,
    spread,
)

PANEL = (4.2, 3.4)  # inches per panel
COLORS = {"random": "tab:gray", "ghn": "tab:blue", "ghn+pp": "tab:orange",
          "pretrained": "tab:green"}
BAD = (TrialStatus.DIVERGED, TrialStatus.FAILED)


def _grid(rows: int, cols: int, title: str) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL[0] * cols, PANEL[1] * rows + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    fig.suptitle(title)
    return fig, axes


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def decades(values: pd.Series) -> tuple[float, float]:
    """Axis limits on whole decades around positive values: every panel gets labelled ticks."""
    v = values[values > 0]
    if v.empty:
        return 1e-4, 1.0
    return 10 ** np.floor(np.log10(v.min()) - 0.05), 10 ** np.ceil(np.log10(v.max()) + 0.05)


def zero_beta_position(df: pd.DataFrame) -> float:
    """Where beta = 0 sits on a log axis: a decade below the smallest sampled beta."""
    positive = df.loc[df["beta"] > 0, "beta"]
    return float(positive.min()) / 10 if not positive.empty else 1e-7


def heatmaps(df: pd.DataFrame) -> Figure:
    """Best validation accuracy over (lr, beta), one panel per arch x init; beta = 0 on a strip.

    Search trials only; a trial whose configuration was repeated is labelled with the std of
    its repeats' validation accuracy (points)."""
    spreads = spread(df)
    df = search_trials(df)
    archs = sorted(df["arch"].dropna().unique()) or ["(none)"]
    inits = sorted(df["init"].dropna().unique()) or ["(none)"]
    fig, axes = _grid(len(archs), len(inits), "Validation accuracy over noise strength and "
                      "learning rate (each marker a trial, where it was sampled)")
    acc = 100 * df.loc[~df["status"].isin(BAD), "best_val_acc"]
    norm = Normalize(acc.min(), acc.max()) if acc.notna().any() else Normalize(0, 100)
    y0 = zero_beta_position(df)
    top = max(float(df["beta"].max()) if df["beta"].notna().any() else y0, y0 * 10) * 3
    mappable = None
    for (i, arch), (j, init) in ((a, b) for a in enumerate(archs) for b in enumerate(inits)):
        ax = axes[i, j]
        sub = df[(df["arch"] == arch) & (df["init"] == init) & df["lr"].notna()]
        if sub.empty:
            _empty(ax, f"{arch} / {init}: no trial")
            continue
        mappable = _heat_panel(ax, sub, (y0, top), norm, spreads) or mappable
        ax.set_xlim(*decades(df["lr"]))
        ax.set_title(f"{arch} / {init} ({len(sub)} trials)")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), label="best validation accuracy (%)")
    return fig


def _heat_panel(ax: Axes, sub: pd.DataFrame, ylim: tuple[float, float], norm: Normalize,
                spreads: pd.DataFrame):
    y0, top = ylim
    y = sub["beta"].where(sub["beta"] > 0, y0).fillna(y0)
    for trial_id, x, yy in zip(sub["trial_id"], sub["lr"], y):
        if trial_id in spreads.index:
            s = spreads.loc[trial_id]
            ax.annotate(f"±{100 * s['val_std']:.1f} ({int(s['n'])})", (x, yy), fontsize=6,
                        xytext=(4, 4), textcoords="offset points")
    good = sub["best_val_acc"].notna() & ~sub["status"].isin(BAD)
    mappable = None
    for stopped, marker, label in ((False, "o", "ran to the end / running"),
                                   (True, "v", "stopped early (ASHA)")):
        m = good & ((sub["status"] == TrialStatus.STOPPED_EARLY) == stopped)
        if m.any():
            mappable = ax.scatter(sub["lr"][m], y[m], c=100 * sub["best_val_acc"][m],
                                  cmap="viridis", norm=norm, marker=marker, s=40,
                                  edgecolors="k", linewidths=0.4, label=label)
    if (~good).any():
        ax.scatter(sub["lr"][~good], y[~good], marker="x", color="0.5", s=40,
                   label="diverged / failed / no accuracy")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(y0 * 3, color="0.6", linestyle=":", linewidth=0.8)  # the strip's edge
    ax.set_ylim(y0 / 3, top)
    decades = 10.0 ** np.arange(np.ceil(np.log10(y0 * 5)), np.floor(np.log10(top)) + 1)
    ax.set_yticks([y0, *decades], ["0 (no noise)", *[f"{t:.0e}" for t in decades]])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("learning rate")
    ax.set_ylabel("noise beta")
    ax.legend(fontsize="x-small", loc="upper left")
    return mappable


def noise_figure(curves: dict[str, NoiseCurve | None],
                 beta_range: tuple[float, float] | None = None,
                 spreads: pd.DataFrame | None = None) -> Figure:
    """Test accuracy against beta at each arch's best GHN lr, with the no-noise and random lines.

    `beta_range` (the sweep's sampled betas) fixes the x axis so panels compare at a glance;
    `spreads` (`_summary.spread`) adds a ± std bar of its repeats to a repeated trial's point.
    """
    archs = list(curves) or ["(none)"]
    fig, axes = _grid(1, len(archs), "Test accuracy against noise strength, at each "
                      "architecture's best learning rate")
    for ax, arch in zip(axes[0], archs):
        curve = curves.get(arch)
        if curve is None:
            _empty(ax, f"{arch}: no GHN trial with an accuracy yet")
            continue
        _noise_panel(ax, curve, beta_range, spreads)
    return fig


def _noise_panel(ax: Axes, curve: NoiseCurve, beta_range: tuple[float, float] | None,
                 spreads: pd.DataFrame | None) -> None:
    pts = curve.points
    if spreads is not None:
        rep = pts[pts["trial_id"].isin(spreads.index)]
        if not rep.empty:
            ax.errorbar(rep["beta"], 100 * rep["test_acc_at_best"],
                        yerr=100 * spreads.loc[rep["trial_id"], "test_std"].to_numpy(),
                        fmt="none", ecolor="0.3", capsize=3, label="± std over repeats")
    for orth, color in ((True, "tab:orange"), (False, "tab:purple")):
        sel = pts[pts["orth"].fillna(False) == orth]
        done = sel["status"] != TrialStatus.STOPPED_EARLY
        label = f"GHN + noise{' + orth' if orth else ''}"
        if done.any():
            ax.scatter(sel["beta"][done], 100 * sel["test_acc_at_best"][done], color=color,
                       s=36, label=label)
        if (~done).any():
            ax.scatter(sel["beta"][~done], 100 * sel["test_acc_at_best"][~done], s=36,
                       facecolors="none", edgecolors=color, label=f"{label} (stopped early)")
    for method, style in (("ghn", "--"), ("random", ":")):
        if method in curve.refs:
            value, inside = curve.refs[method]
            where = "" if inside else ", any lr"
            ax.axhline(100 * value, color=COLORS[method], linestyle=style,
                       label=f"{METHOD_LABELS[method]} ({100 * value:.1f}%{where})")
    ax.set_xscale("log")
    if beta_range is not None:  # whole decades: a sub-decade log axis has no labelled tick
        ax.set_xlim(*decades(pd.Series(beta_range)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = curve.lr / LR_WINDOW, curve.lr * LR_WINDOW
    ax.set_title(f"{curve.arch}: trials at lr {lo:.2g}–{hi:.2g}\n(best GHN lr {curve.lr:.2g})")
    ax.set_xlabel("noise beta")
    ax.set_ylabel("test accuracy at best val epoch (%)")
    if pts.empty:
        ax.text(0.5, 0.5, "no GHN + noise trial near this lr", ha="center",
                transform=ax.transAxes, color="gray")
    if ax.get_legend_handles_labels()[0]:  # an empty panel has nothing to name
        ax.legend(fontsize="x-small")


def learning_curves(df: pd.DataFrame, curves: pd.DataFrame) -> Figure:
    """Validation accuracy per epoch of the best trial of each init method, one panel per arch."""
    best = best_per_group(df)
    archs = sorted(df["arch"].dropna().unique()) or ["(none)"]
    fig, axes = _grid(1, len(archs), "Learning curves of the best search trial per init method")
    for ax, arch in zip(axes[0], archs):
        mine = best[best["arch"] == arch]
        if mine.empty:
            _empty(ax, f"{arch}: no trial with an accuracy yet")
            continue
        for method in order_methods(mine["method"].unique()):
            row = mine[mine["method"] == method].iloc[0]
            c = curves[curves["trial_id"] == row["trial_id"]].sort_values("epoch")
            state = "" if row["complete"] else f", {row['status'].replace('_', ' ')}"
            ax.plot(c["epoch"], 100 * c["val_acc"], marker=".", color=COLORS.get(method),
                    label=f"{METHOD_LABELS.get(method, method)}{state}")
        ax.set_title(arch)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.legend(fontsize="x-small")
    return fig


def gains_figure(comp: pd.DataFrame) -> Figure:
    """Test accuracy per init method per arch: the mean over the chosen configuration's repeats
    with its 95% interval, or the search's single run (hatched) where there are none. GHN bars
    carry their gain over random init (paired, with its interval)."""
    fig = Figure(figsize=(max(5.0, 2.2 * max(1, comp["arch"].nunique()) + 2), 4.4),
                 layout="constrained")
    ax = fig.subplots()
    ax.set_title("Test accuracy per init method (chosen by validation accuracy)")
    if comp.empty:
        _empty(ax, "no trial with an accuracy yet")
        return fig
    archs = sorted(comp["arch"].unique())
    methods = order_methods(comp["method"].unique())
    width = 0.8 / len(methods)
    highest = 0.0
    for k, method in enumerate(methods):
        rows = comp[comp["method"] == method].set_index("arch")
        mine = [(i, rows.loc[a]) for i, a in enumerate(archs) if a in rows.index]
        xs = [i + (k - (len(methods) - 1) / 2) * width for i, _ in mine]
        repeated = [r["n_seeds"] >= 2 for _, r in mine]
        vals = [100 * (r["test_mean"] if rep else r["test_acc_at_best"])
                for (_, r), rep in zip(mine, repeated)]
        err = np.array([[100 * (r["test_mean"] - r["test_lo"]), 100 * (r["test_hi"]
                        - r["test_mean"])] if rep else [0.0, 0.0]
                        for (_, r), rep in zip(mine, repeated)]).T
        bars = ax.bar(xs, vals, width, color=COLORS.get(method),
                      label=METHOD_LABELS.get(method, method))
        if any(repeated):
            ax.errorbar(np.compress(repeated, xs), np.compress(repeated, vals),
                        yerr=np.compress(repeated, err, axis=1), fmt="none", ecolor="k",
                        capsize=3)
        for bar, rep, x, top, (_, r) in zip(bars, repeated, xs, np.add(vals, err[1]), mine):
            if not rep:
                bar.set_hatch("//")
            ax.text(x, top + 0.5, _gain_label(r, method), ha="center", va="bottom",
                    fontsize="x-small")
        highest = max(highest, float(np.max(np.add(vals, err[1]))))
    ax.set_xticks(range(len(archs)), archs)
    ax.set_ylabel("test accuracy (%): mean over repeats, 95% interval;\nhatched: one run")
    ax.set_ylim(0, highest * 1.2 + 1)
    ax.legend(handles=[Patch(color=COLORS.get(m), label=METHOD_LABELS.get(m, m))
                       for m in methods], fontsize="small", loc="upper left")
    return fig


def _gain_label(row: pd.Series, method: str) -> str:
    if method == "random" or pd.isna(row["gain_points"]):
        return ""
    if row["gain_n"] >= 2:
        return f"{row['gain_points']:+.1f}\n[{row['gain_lo']:+.1f}, {row['gain_hi']:+.1f}]"
    return f"{row['gain_points']:+.1f} (1 run)"


def asha_figure(acct: pd.DataFrame, df: pd.DataFrame) -> Figure:
    """ASHA's savings: epochs spent vs. if every trial had run to the end; where trials ended."""
    fig, axes = _grid(1, 2, "ASHA accounting")
    ax = axes[0, 0]
    rows = acct[acct["arch"] != "all"]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, rows["epochs_if_all_ran"], 0.4, color="0.75", label="if all ran to the end")
    ax.bar(x + 0.2, rows["epochs_spent"], 0.4, color="tab:blue", label="spent")
    ax.set_xticks(x, rows["arch"])
    ax.set_ylabel("epochs (all trials)")
    ax.set_title("epochs spent")
    ax.legend(fontsize="small")
    ax = axes[0, 1]
    runs = search_trials(df)["epochs_run"].dropna()
    if runs.empty:
        _empty(ax, "no trial yet")
    else:
        ax.hist(runs, bins=np.arange(-0.5, runs.max() + 1.5), color="tab:blue")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epochs a trial ran")
        ax.set_ylabel("trials")
        ax.set_title("where trials ended")
    return fig
