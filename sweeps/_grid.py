"""What a phase's ResultGrid says of its trials, in the contract's terms."""

from __future__ import annotations

import dataclasses

from ray import tune

from contract import METRIC, TrialStatus, classify, method_of, rank_key

from .tracking import sweep_interrupted


@dataclasses.dataclass
class GridTrial:
    """A trial of a ResultGrid as `contract.rank_key` ranks it."""

    trial_id: str
    config: dict
    status: TrialStatus
    best_val: float | None
    best_epoch: int | None

    @property
    def rank(self) -> tuple | None:
        return rank_key(self.status, self.best_val, self.trial_id)

    @property
    def group(self) -> tuple[str, str]:
        """(arch, init method), the unit the repeats choose configurations in."""
        c = self.config
        return c.get("arch"), method_of(c.get("init"), c.get("postproc.beta"),
                                        c.get("postproc.orth"))


def grid_trials(result_grid: tune.ResultGrid, max_epochs: int) -> list[GridTrial]:
    """Every trial of ``result_grid`` with its status; the experiment has ended, so a trial
    that did not end was cut off."""
    out = []
    for result in result_grid:
        df = result.metrics_dataframe
        last = result.metrics or {}
        best_val = best_epoch = None
        if df is not None and METRIC in df and df[METRIC].notna().any():
            row = df.loc[df[METRIC].idxmax()]  # the earliest epoch with the highest value
            best_val, best_epoch = float(row[METRIC]), int(row["epoch"])
        status = classify(
            errored=bool(result.error),
            diverged=df is not None and "diverged" in df and bool((df["diverged"] > 0).any()),
            epochs_run=last.get("epoch", 0), epochs_planned=max_epochs,
            ended=bool(last.get("done")), live=False)  # ASHA's stop carries `done`
        trial_id = last.get("trial_id") or (result.path or "").rsplit("/", 1)[-1]
        out.append(GridTrial(str(trial_id), dict(result.config or {}), status, best_val,
                             best_epoch))
    return out


def phase_interrupted(result_grid: tune.ResultGrid, total: int) -> bool:
    """Whether the phase was cut off before its ``total`` trials all ended (Ctrl-C)."""
    return sweep_interrupted([bool(r.error or (r.metrics or {}).get("done"))
                              for r in result_grid], total)
