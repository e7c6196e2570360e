"""How many trials Ray runs at once on one node: the arithmetic behind every packing claim.

A trial asks for ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs; it starts only where both
are free, so the scarcer one decides. Ray counts resources in units of 1/10000, and a fraction
of a GPU below 1 must fit on one card: 0.3 GPU packs 3 trials per card, not 3.33. On a
g5.xlarge (4 CPUs, 1 GPU), ``--gpus-per-trial 0.25`` packs four trials only if each asks for at
most one CPU.
"""

from __future__ import annotations

_UNIT = 10_000  # Ray's resource precision: 0.0001


def _units(x: float) -> int:
    return round(x * _UNIT)


def trials_per_node(
    *, node_cpus: float, node_gpus: float, cpus_per_trial: float, gpus_per_trial: float
) -> int:
    """Trials that fit on one idle node with these resources (0: none fits)."""
    if cpus_per_trial <= 0 or gpus_per_trial < 0 or node_cpus < 0 or node_gpus < 0:
        raise ValueError(f"resources must be >= 0 and cpus_per_trial > 0, got node "
                         f"{node_cpus} CPU / {node_gpus} GPU, trial {cpus_per_trial} CPU / "
                         f"{gpus_per_trial} GPU")
    by_cpu = _units(node_cpus) // _units(cpus_per_trial)
    if gpus_per_trial == 0:
        return by_cpu
    g = _units(gpus_per_trial)
    if g < _UNIT:  # a share of one card: each card holds whole shares only
        by_gpu = int(node_gpus) * (_UNIT // g)
    else:
        by_gpu = _units(node_gpus) // g
    return min(by_cpu, by_gpu)
