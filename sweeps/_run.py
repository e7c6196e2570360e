"""A sweep, top to bottom: its GHN, checks, Ray, the search, the repeats, the outputs.

Optuna TPE + ASHA over `trainable.run_trial`, tracked in MLflow; the modules each step calls
never call back here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import ray
from ray import tune

from contract import METRIC

from ._config import SweepConfig
from ._ghn_training import with_ghn
from ._grid import grid_trials, phase_interrupted
from ._loopback import start_local_ray
from ._outputs import log_closing_lines, log_resume_hint, write_outputs
from ._preflight import Cleared, preflight
from ._progress import ProgressCallback
from ._repeats import repeat_configs
from ._signals import StopSignals
from ._trial import clear_staging
from ._tuner import build_tuner, quiet_tune
from .tracking import tracking_for

log = logging.getLogger(__name__)


def run(cfg: SweepConfig, argv: list[str] | None = None) -> int:
    """Run the sweep ``cfg``: the search, then the repeats. Returns the exit status (130:
    interrupted by Ctrl-C, 143: by SIGTERM; ``argv``, default ``sys.argv[1:]``, is echoed in the
    hint to ``--resume``); raises `sweeps._preflight.BadInput` before any trial (and before Ray
    starts, unless an empty ``--ghn`` had it train the GHN first)."""
    quiet_tune()
    cfg = with_ghn(cfg, start_ray)  # trains the GHN first, on Ray, when --ghn names none
    cleared = preflight(cfg)
    start_ray(cfg)
    stop = StopSignals()
    stop.install()  # after Ray, whose own SIGTERM handlers would end the driver unsaved
    start = time.time()
    try:
        interrupted = _phases(cfg, cleared)
    except KeyboardInterrupt:  # a second Ctrl-C/SIGTERM, or one outside Tune: from its last save
        log.warning("stopped at once; --resume continues from Tune's last saved state")
        interrupted = True
    log_closing_lines(cfg, time.time() - start, _parent_page(cleared))
    if interrupted:  # Ctrl-C or SIGTERM: what ran is kept, the rest can follow
        log_resume_hint(cfg, argv)
        return stop.exit_status()
    return 0


def _parent_page(cleared: Cleared) -> tuple[str, str] | None:
    """(experiment id, parent run id) of the sweep's MLflow record, when it has one."""
    run_id, experiment_id = cleared.tracking.parent_run_id, cleared.tracking.experiment_id
    return (experiment_id, run_id) if run_id and experiment_id else None


def _phases(cfg: SweepConfig, cleared: Cleared) -> bool:
    """The search, then the repeats; whether they were interrupted."""
    out = cfg.results_dir or Path.cwd() / cfg.sweep_name  # remote storage: the tables go here
    clear_staging(cfg)
    progress = ProgressCallback(METRIC, cfg.max_epochs, cleared.tracking,
                                every_s=cfg.progress_every)
    # The progress first: its last line's counts reach the parent run before the tracking's
    # end waits for the writes and closes it.
    search = build_tuner(cfg, [progress, cleared.tracking]).fit()
    write_outputs(cfg, search, out)
    interrupted = phase_interrupted(search, cfg.num_samples)
    if cfg.repeats and not interrupted:
        interrupted = _repeat(cfg, search, cleared, out)
    return interrupted


def _repeat(cfg: SweepConfig, search: tune.ResultGrid, cleared: Cleared, out: Path) -> bool:
    """The repeats phase, after the search; whether it was interrupted."""
    configs = repeat_configs(cfg, grid_trials(search, cfg.max_epochs))
    if not configs:
        log.info("repeats: no trial of the search can be repeated (all failed or diverged)")
        cleared.tracking.close_parent()
        return False
    log.info("repeats: %d configurations x %d seeds", len(configs) // cfg.repeats, cfg.repeats)
    tracking = tracking_for(cfg, cleared.sweep_id, final=True, phase="repeats")
    progress = ProgressCallback(METRIC, cfg.max_epochs, tracking, phase="repeats",
                                every_s=cfg.progress_every)
    grid = build_tuner(cfg, [progress, tracking], repeats=configs).fit()
    write_outputs(cfg, grid, out, phase="repeats")
    return phase_interrupted(grid, len(configs))


def start_ray(cfg: SweepConfig) -> None:
    """Join the cluster at ``--address``, or start Ray in this process, on 127.0.0.1 only
    (`sweeps._loopback.start_local_ray`); once: training the GHN may have started it."""
    if ray.is_initialized():
        return
    if cfg.address:
        ray.init(address=cfg.address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        start_local_ray()
