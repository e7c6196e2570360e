"""The sweep as two Arrow tables of fixed schema: trials (a row a trial), curves (trial x epoch).

The schemas are the contract with users' notebooks (documented in docs/analysis.md): columns are
only ever added, and a value that is missing in the source is null, never a made-up number.
Accuracies are fractions (0.8 = 80 %), as the trainable reports them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa

from contract import EPOCH_METRICS, method_of

from ._data import Sweep, Trial

SCHEMA_VERSION = "1"
_S, _F, _I, _B = pa.string(), pa.float64(), pa.int64(), pa.bool_()

TRIALS_SCHEMA = pa.schema([
    ("sweep", _S), ("trial_id", _S), ("run_id", _S), ("trial_name", _S),
    ("arch", _S), ("init", _S), ("method", _S), ("ghn", _S),
    ("lr", _F), ("beta", _F), ("orth", _B), ("layer", _I), ("n_shots", _I), ("seed", _I),
    ("epochs_planned", _I), ("status", _S), ("epochs_run", _I),
    ("best_val_acc", _F), ("best_epoch", _I), ("final_val_acc", _F),
    ("test_acc_at_best", _F), ("final_test_acc", _F),
    ("train_time_s", _F), ("wall_time_s", _F),
    ("init_mean_abs_cos", _F), ("init_repeat_share", _F), ("init_eff_rank_ratio", _F),
    ("config_json", _S), ("repeat_of", _S),
], metadata={"ghn_sweep.table": "trials", "ghn_sweep.schema_version": SCHEMA_VERSION})

CURVE_COLUMNS = {m: m.replace("/", "_") for m in EPOCH_METRICS}  # val/acc -> val_acc
CURVES_SCHEMA = pa.schema(
    [("sweep", _S), ("trial_id", _S), ("arch", _S), ("init", _S), ("method", _S),
     ("epoch", _I)] + [(c, _F) for c in CURVE_COLUMNS.values()],
    metadata={"ghn_sweep.table": "curves", "ghn_sweep.schema_version": SCHEMA_VERSION})


def _num(config: dict[str, Any], key: str, cast: type = float) -> Any:
    """A config value as a number; None when absent or unparsable (MLflow stores strings)."""
    value = config.get(key)
    if value is None or value in ("", "None"):
        return None
    try:
        return cast(float(value)) if cast is int else cast(value)
    except (TypeError, ValueError):
        return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    return {"true": True, "1": True, "false": False, "0": False}.get(str(value).lower())


def _beta(config: dict[str, Any]) -> float | None:
    """Noise strength; 0 where none was applied (random init, or the noise switch off)."""
    beta = _num(config, "postproc.beta")
    if beta is None and (config.get("init") != "ghn" or _bool(config.get("search.noise")) is False):
        return 0.0
    return beta


def _best(val: dict[int, float]) -> int | None:
    """The earliest epoch with the highest finite validation accuracy."""
    finite = {e: v for e, v in val.items() if math.isfinite(v)}
    return min(finite, key=lambda e: (-finite[e], e)) if finite else None


def trial_row(sweep: str, t: Trial) -> dict[str, Any]:
    """One trials.parquet row."""
    c = t.config
    beta, orth = _beta(c), _bool(c.get("postproc.orth"))
    val, test = t.history.get("val/acc", {}), t.history.get("test/acc", {})
    best = _best(val)
    times = t.history.get("epoch_time_s", {})
    return {
        "sweep": sweep, "trial_id": t.trial_id, "run_id": t.run_id, "trial_name": t.name,
        "arch": c.get("arch"), "init": c.get("init"),
        "method": method_of(c.get("init"), beta, orth), "ghn": c.get("ghn"),
        "lr": _num(c, "optim.lr"), "beta": beta, "orth": orth,
        "layer": _num(c, "postproc.layer", int), "n_shots": _num(c, "data.n_shots", int),
        "seed": _num(c, "seed", int), "epochs_planned": _num(c, "optim.epochs", int),
        "status": t.status,
        "epochs_run": max((max(h) for h in t.history.values() if h), default=0),
        "best_val_acc": val[best] if best is not None else None, "best_epoch": best,
        "final_val_acc": val[max(val)] if val else None,
        "test_acc_at_best": test.get(best) if best is not None else None,
        "final_test_acc": test[max(test)] if test else None,
        "train_time_s": sum(times.values()) if times else None,
        "wall_time_s": t.wall_time_s,
        **{f"init_{k}": t.init.get(f"init/{k}") for k in
           ("mean_abs_cos", "repeat_share", "eff_rank_ratio")},
        "config_json": json.dumps(c, sort_keys=True, default=str),
        "repeat_of": t.repeat_of,
    }


def trials_table(sweep: Sweep) -> pa.Table:
    """trials.parquet: one row per trial, in TRIALS_SCHEMA."""
    rows = [trial_row(sweep.name, t) for t in sweep.trials]
    return pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)


def curves_table(sweep: Sweep) -> pa.Table:
    """curves.parquet: a row per trial and epoch, in CURVES_SCHEMA; a metric not logged is null."""
    rows = []
    for t in sweep.trials:
        head = trial_row(sweep.name, t)
        epochs = sorted(set().union(*t.history.values())) if t.history else []
        for epoch in epochs:
            rows.append({**{k: head[k] for k in ("sweep", "trial_id", "arch", "init", "method")},
                         "epoch": epoch,
                         **{col: t.history.get(m, {}).get(epoch)
                            for m, col in CURVE_COLUMNS.items()}})
    return pa.Table.from_pylist(rows, schema=CURVES_SCHEMA)
