"""The numbers behind the plots and sentences, computed once from the trials table.

Selection is by validation accuracy (what the search optimised), with `contract.rank_key`'s rule,
among the search's trials; test accuracy is read at the selected trial's best validation epoch,
so the test set never chooses anything. A chosen configuration's accuracy and its gain over
random init are then measured on its repeats -- further seeds that chose nothing -- as mean,
std and 95% interval, the gain paired seed by seed with random init's repeats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from contract import TrialStatus, rank_key

from ._stats import estimate, paired

METHODS = ("random", "ghn", "ghn+pp", "pretrained")  # display order; others follow
METHOD_LABELS = {"random": "random init", "ghn": "GHN, no post-processing",
                 "ghn+pp": "GHN + post-processing", "pretrained": "pretrained"}
LR_WINDOW = 2.0  # the noise picture uses GHN trials within this factor of the best lr
# repeats that count: run to the end (or until they diverged)
MEASURED = (TrialStatus.FINISHED, TrialStatus.DIVERGED)
NEVER_BEST = (TrialStatus.DIVERGED, TrialStatus.FAILED)  # see contract.rank_key


def frame(table: pa.Table) -> pd.DataFrame:
    """The trials table as pandas, methods in display order."""
    df = table.to_pandas()
    df["method"] = df["method"].fillna("unknown")
    return df


def search_trials(df: pd.DataFrame) -> pd.DataFrame:
    """The search's own trials, without the repeats of chosen configurations."""
    return df[df["repeat_of"].isna()]


def order_methods(methods: list[str] | np.ndarray) -> list[str]:
    known = [m for m in METHODS if m in set(methods)]
    return known + sorted(set(methods) - set(METHODS))


def best_per_group(df: pd.DataFrame, keys: tuple[str, ...] = ("arch", "method")) -> pd.DataFrame:
    """Best search trial of each group, by `contract.rank_key`."""
    search = search_trials(df)
    ranks = [rank_key(r.status, None if pd.isna(r.best_val_acc) else r.best_val_acc, r.trial_id)
             for r in search.itertuples()]
    ok = search.assign(_rank=ranks).loc[np.array([r is not None for r in ranks], dtype=bool)]
    ok = ok.assign(complete=ok["status"] == TrialStatus.FINISHED)
    ok = ok.iloc[sorted(range(len(ok)), key=lambda i: ok["_rank"].iloc[i])]
    return ok.groupby(list(keys), sort=False).head(1).drop(columns="_rank").reset_index(drop=True)


def repeats_of(df: pd.DataFrame, trial_id: str) -> dict[int, float]:
    """seed -> test accuracy at the best validation epoch, of the repeats of ``trial_id``."""
    rows = df[(df["repeat_of"] == trial_id) & df["status"].isin(MEASURED)
              & df["test_acc_at_best"].notna() & df["seed"].notna()]
    return {int(r.seed): float(r.test_acc_at_best) for r in rows.itertuples()}


def comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per arch and method: the chosen (best search) trial, its repeats' test accuracy
    (``n_seeds``, ``test_mean``, ``test_std``, ``test_lo``/``test_hi``: the 95% interval) and
    its gain over random init in points: paired over the seeds both have repeats for
    (``gain_n`` pairs, ``gain_lo``/``gain_hi``), or with no repeats the difference of the two
    chosen trials' single runs (``gain_n`` = 0)."""
    best = best_per_group(df)
    seeds = {r.trial_id: repeats_of(df, r.trial_id) for r in best.itertuples()}
    random = {r.arch: r for r in best[best["method"] == "random"].itertuples()}
    rows = []
    for r in best.itertuples():
        e = estimate(seeds[r.trial_id].values())
        row = {"seed_acc": seeds[r.trial_id], "n_seeds": e.n, "test_mean": e.mean,
               "test_std": e.std, "test_lo": e.lo, "test_hi": e.hi,
               "gain_points": np.nan, "gain_n": 0, "gain_lo": np.nan, "gain_hi": np.nan}
        ref = random.get(r.arch)
        if ref is not None and r.method != "random":
            g = paired(seeds[r.trial_id], seeds[ref.trial_id])
            if g.n:
                row.update(gain_points=100 * g.mean, gain_n=g.n, gain_lo=100 * g.lo,
                           gain_hi=100 * g.hi)
            elif pd.notna(r.test_acc_at_best) and pd.notna(ref.test_acc_at_best):
                row["gain_points"] = 100 * (r.test_acc_at_best - ref.test_acc_at_best)
        rows.append(row)
    columns = ["seed_acc", "n_seeds", "test_mean", "test_std", "test_lo", "test_hi",
               "gain_points", "gain_n", "gain_lo", "gain_hi"]
    best = pd.concat([best, pd.DataFrame(rows, index=best.index, columns=columns)], axis=1)
    rank = {m: i for i, m in enumerate(order_methods(best["method"].unique()))}
    best["_order"] = best["method"].map(rank)
    return best.sort_values(["arch", "_order"]).drop(columns="_order").reset_index(drop=True)


def spread(df: pd.DataFrame) -> pd.DataFrame:
    """Per search trial that has repeats: ``n``, ``val_std`` and ``test_std`` over them (points
    of accuracy, as fractions), for the plots' error bars and labels."""
    rep = df[df["repeat_of"].notna() & df["status"].isin(MEASURED)]
    out = rep.groupby("repeat_of").agg(n=("trial_id", "size"), val_std=("best_val_acc", "std"),
                                       test_std=("test_acc_at_best", "std"))
    return out[out["n"] >= 2]


@dataclass
class NoiseCurve:
    """Accuracy against beta for one arch, at (near) its best GHN learning rate."""

    arch: str
    lr: float
    points: pd.DataFrame  # GHN trials with beta > 0 within LR_WINDOW of lr
    refs: dict[str, tuple[float, bool]]  # label -> (test acc, True if within the lr window)


def noise_curve(df: pd.DataFrame, arch: str, window: float = LR_WINDOW) -> NoiseCurve | None:
    """None when the arch has no GHN trial with an accuracy yet."""
    mine = search_trials(df)
    mine = mine[(mine["arch"] == arch) & mine["lr"].notna()]
    ghn = best_per_group(mine[mine["init"] == "ghn"], keys=("arch",))
    if ghn.empty:
        return None
    lr = float(ghn["lr"].iloc[0])
    near = mine[np.abs(np.log(mine["lr"] / lr)) <= math.log(window) + 1e-12]
    points = near[(near["init"] == "ghn") & (near["beta"] > 0)
                  & ~near["status"].isin(NEVER_BEST) & near["test_acc_at_best"].notna()
                  ].sort_values("beta")
    refs = {}
    for method in ("ghn", "random"):
        for subset, inside in ((near, True), (mine, False)):
            best = best_per_group(subset[subset["method"] == method], keys=("arch",))
            if not best.empty and pd.notna(best["test_acc_at_best"].iloc[0]):
                refs[method] = (float(best["test_acc_at_best"].iloc[0]), inside)
                break
    return NoiseCurve(arch=arch, lr=lr, points=points.reset_index(drop=True), refs=refs)


def asha_accounting(df: pd.DataFrame) -> pd.DataFrame:
    """Per arch and in total: epochs spent against epochs if every trial had run to the end
    (the search's trials: ASHA never stops a repeat)."""
    df = search_trials(df)
    planned = df["epochs_planned"].fillna(df["epochs_planned"].max()).fillna(df["epochs_run"])
    work = df.assign(full=planned.clip(lower=df["epochs_run"]))
    per_arch = work.groupby(work["arch"].fillna("unknown")).agg(
        trials=("trial_id", "size"), epochs_spent=("epochs_run", "sum"),
        epochs_if_all_ran=("full", "sum"))
    per_arch.loc["all"] = per_arch.sum()
    per_arch["saved_pct"] = 100 * (1 - per_arch["epochs_spent"]
                                   / per_arch["epochs_if_all_ran"].replace(0, np.nan))
    return per_arch.reset_index(names="arch")
