"""The numbers behind the plots and sentences, computed once from the trials table.

Selection is by validation accuracy (what the search optimised); test accuracy is read at the
selected trial's best validation epoch, so the test set never chooses anything. A trial that ran
to its last epoch beats one stopped early or still running: its number is final.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ._data import FINISHED, INTERRUPTED, RUNNING, STOPPED_EARLY

METHODS = ("random", "ghn", "ghn+pp", "pretrained")  # display order; others follow
METHOD_LABELS = {"random": "random init", "ghn": "GHN, no post-processing",
                 "ghn+pp": "GHN + post-processing", "pretrained": "pretrained"}
# Trials whose accuracy can stand for their config; diverged and failed ones cannot.
CANDIDATES = (FINISHED, STOPPED_EARLY, RUNNING, INTERRUPTED)
LR_WINDOW = 2.0  # the noise picture uses GHN trials within this factor of the best lr


def frame(table: pa.Table) -> pd.DataFrame:
    """The trials table as pandas, methods in display order."""
    df = table.to_pandas()
    df["method"] = df["method"].fillna("unknown")
    return df


def order_methods(methods: list[str] | np.ndarray) -> list[str]:
    known = [m for m in METHODS if m in set(methods)]
    return known + sorted(set(methods) - set(METHODS))


def best_per_group(df: pd.DataFrame, keys: tuple[str, ...] = ("arch", "method")) -> pd.DataFrame:
    """Best trial of each group by validation accuracy, complete trials first."""
    ok = df[df["status"].isin(CANDIDATES) & df["best_val_acc"].notna()].copy()
    ok["complete"] = ok["status"] == FINISHED
    ok = ok.sort_values(["complete", "best_val_acc", "trial_id"], ascending=[False, False, True])
    return ok.groupby(list(keys), sort=False).head(1).reset_index(drop=True)


def comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Per arch and method: the best trial, and its test-accuracy gain over random, in points."""
    best = best_per_group(df)
    random = best[best["method"] == "random"].set_index("arch")["test_acc_at_best"]
    best["gain_points"] = [
        100 * (row.test_acc_at_best - random[row.arch])
        if row.arch in random.index and pd.notna(random[row.arch])
        and pd.notna(row.test_acc_at_best) else np.nan
        for row in best.itertuples()]
    rank = {m: i for i, m in enumerate(order_methods(best["method"].unique()))}
    best["_order"] = best["method"].map(rank)
    return best.sort_values(["arch", "_order"]).drop(columns="_order").reset_index(drop=True)


@dataclass
class NoiseCurve:
    """Accuracy against beta for one arch, at (near) its best GHN learning rate."""

    arch: str
    lr: float
    points: pd.DataFrame  # GHN trials with beta > 0 within LR_WINDOW of lr
    refs: dict[str, tuple[float, bool]]  # label -> (test acc, True if within the lr window)


def noise_curve(df: pd.DataFrame, arch: str, window: float = LR_WINDOW) -> NoiseCurve | None:
    """None when the arch has no GHN trial with an accuracy yet."""
    mine = df[(df["arch"] == arch) & df["lr"].notna()]
    ghn = best_per_group(mine[mine["init"] == "ghn"], keys=("arch",))
    if ghn.empty:
        return None
    lr = float(ghn["lr"].iloc[0])
    near = mine[np.abs(np.log(mine["lr"] / lr)) <= math.log(window) + 1e-12]
    points = near[(near["init"] == "ghn") & (near["beta"] > 0) & near["status"].isin(CANDIDATES)
                  & near["test_acc_at_best"].notna()].sort_values("beta")
    refs = {}
    for method in ("ghn", "random"):
        for subset, inside in ((near, True), (mine, False)):
            best = best_per_group(subset[subset["method"] == method], keys=("arch",))
            if not best.empty and pd.notna(best["test_acc_at_best"].iloc[0]):
                refs[method] = (float(best["test_acc_at_best"].iloc[0]), inside)
                break
    return NoiseCurve(arch=arch, lr=lr, points=points.reset_index(drop=True), refs=refs)


def asha_accounting(df: pd.DataFrame) -> pd.DataFrame:
    """Per arch and in total: epochs spent against epochs if every trial had run to the end."""
    planned = df["epochs_planned"].fillna(df["epochs_planned"].max()).fillna(df["epochs_run"])
    work = df.assign(full=planned.clip(lower=df["epochs_run"]))
    per_arch = work.groupby(work["arch"].fillna("unknown")).agg(
        trials=("trial_id", "size"), epochs_spent=("epochs_run", "sum"),
        epochs_if_all_ran=("full", "sum"))
    per_arch.loc["all"] = per_arch.sum()
    per_arch["saved_pct"] = 100 * (1 - per_arch["epochs_spent"]
                                   / per_arch["epochs_if_all_ran"].replace(0, np.nan))
    return per_arch.reset_index(names="arch")
