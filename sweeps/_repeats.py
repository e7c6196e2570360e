"""Which configurations the repeats phase runs again, with further seeds."""

from __future__ import annotations

from contract import REPEAT_OF

from ._config import SweepConfig
from ._grid import GridTrial
from ._space import baseline_configs, trial_config


def repeat_configs(cfg: SweepConfig, trials: list[GridTrial]) -> list[dict]:
    """What the repeats phase runs: per (arch, init method) the best `repeat_top` trials of the
    search, and every baseline, each again with seeds ``seed + 1 .. seed + repeats``.

    The original trials' own seed chose them, so only the further seeds measure them.
    """
    chosen: dict[str, GridTrial] = {}
    groups: dict[tuple, list[GridTrial]] = {}
    for t in trials:
        groups.setdefault(t.group, []).append(t)
    for group in groups.values():
        ranked = sorted((t for t in group if t.rank is not None), key=lambda t: t.rank)
        chosen.update({t.trial_id: t for t in ranked[:cfg.repeat_top]})
    resolved = [(t, trial_config(t.config, cfg).to_flat()) for t in trials]
    for point in baseline_configs(cfg):
        flat = trial_config(point, cfg).to_flat()
        match = next((t for t, f in resolved if f == flat), None)
        if match is not None:
            chosen.setdefault(match.trial_id, match)
    return [{**t.config, "seed": cfg.seed + s, REPEAT_OF: t.trial_id}
            for t in chosen.values() for s in range(1, cfg.repeats + 1)]
