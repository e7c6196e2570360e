"""Assemble and run a sweep: Optuna TPE + ASHA over `trainable.run_trial`, tracked in MLflow."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys
import time
import typing
from pathlib import Path

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from analysis._data import DIVERGED, FAILED, FINISHED, INTERRUPTED, STOPPED_EARLY
from analysis._tables import method_of
from analysis.best import best_of, rank_key
from ghn import resolve_checkpoint
from trainable import prepare_data

from ._config import SweepConfig, parse_command
from ._identity import new_sweep_id, read_sweep_id, write_sweep_id
from ._loopback import start_local_ray
from ._progress import ProgressCallback, describe
from ._resume import Limiter, SchedulerState, apply_harmless, heal_checkpoints, resumed_record
from ._space import REPEAT_OF, SearchSpace, baseline_configs, baselines, plan, trial_config
from ._trial import sweep_trial
from .tracking import MlflowTrackingCallback, find_parent_run, probe, sweep_interrupted

_logger = logging.getLogger(__name__)

METRIC, MODE = "val/acc", "max"  # declared once: ASHA, TPE and the best-trial summary use it


class PrunedAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial stopped early (by ASHA) as PRUNED, not COMPLETE.

    Ray's OptunaSearch reports every epoch to the Optuna trial as an intermediate value, then
    completes a stopped trial with its last value, as if it had run to the end. TPE ranks
    pruned trials below complete ones, by the epoch they reached and the value there, which is
    what a stopped trial says about its config.
    """

    def __init__(self, *args: typing.Any, max_epochs: int, **kwargs: typing.Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs
        self._told_before_restore: set[str] = set()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._told_before_restore:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._told_before_restore:  # Optuna keeps the first telling
            self._completed_trials.add(trial_id)
            return
        stopped = (bool(result) and not error and result.get("epoch", 0) < self.max_epochs
                   and not result.get("diverged", 0) > 0)
        # OptunaSearch tells PRUNED for a trial that ended without a result and without error.
        super().on_trial_complete(trial_id, None if stopped else result, error)

    def restore(self, checkpoint_path: str) -> None:
        """The searcher of Tune's last saved state, reconciled with the study, which is ahead.

        The study is written at once (SQLite), Tune's state only now and then. A trial that
        ended after the last state save of a killed driver is told to Optuna already, yet Tune
        runs it again (from its checkpoint): Optuna refuses a second telling ("Cannot tell a
        COMPLETE trial"), so it is skipped. A trial the killed driver started after that save is
        unknown to the restored sweep, which samples another in its place: it failed.
        """
        super().restore(checkpoint_path)
        ours = {t.number: tid for tid, t in self._ot_trials.items()}
        self._told_before_restore = set()
        for t in self._ot_study.get_trials(deepcopy=False):
            if t.number not in ours:
                if t.state == optuna.trial.TrialState.RUNNING:
                    self._ot_study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            elif t.state.is_finished() and ours[t.number] not in self._completed_trials:
                self._told_before_restore.add(ours[t.number])


def _searcher(cfg: SweepConfig) -> Limiter:
    storage = None
    if cfg.results_dir is not None:  # the study sits next to the results, for inspection
        cfg.results_dir.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(f"sqlite:///{cfg.results_dir / 'optuna.db'}")
    search = PrunedAwareOptunaSearch(
        space=SearchSpace(cfg), metric=METRIC, mode=MODE, points_to_evaluate=baselines(cfg),
        sampler=optuna.samplers.TPESampler(seed=cfg.seed), study_name=cfg.sweep_name,
        storage=storage, max_epochs=cfg.max_epochs)
    return Limiter(search, max_concurrent=cfg.max_concurrent)


def trial_dirname(trial) -> str:
    """``sweep_trial_<id>_<n>_resnet18_ghn_lr=0.0015_orth=True``: the trial's sampled values.

    Tune's default name lists every config key alphabetically, the sweep's constants
    (checkpoint_every, data_dataset, ...) first, and cuts it at 130 characters, before them.
    """
    number = trial.experiment_tag.split("_", 1)[0]  # Tune's tag: "<n>_<key=value,...>"
    return "_".join([trial.trainable_name, trial.trial_id, number,
                     *describe(trial.config).split()])


class FixedConfigs(Searcher):
    """Hands out a given list of configs, each once, in order: the repeats phase.

    (Tune's BasicVariantGenerator needs every key of its points in a param space; these
    configs differ in their keys by init method.)
    """

    def __init__(self, configs: list[dict]) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.configs, self.handed_out = list(configs), 0

    def suggest(self, trial_id: str) -> dict | str:
        if self.handed_out >= len(self.configs):
            return Searcher.FINISHED
        self.handed_out += 1
        return dict(self.configs[self.handed_out - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        pass  # nothing to learn

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"configs": self.configs, "handed_out": self.handed_out}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        self.configs, self.handed_out = state["configs"], state["handed_out"]


REPEATS_SUFFIX = "-repeats"  # the repeats phase's Ray experiment: <storage>/<sweep>-repeats


def repeats_path(cfg: SweepConfig) -> str:
    return cfg.sweep_path + REPEATS_SUFFIX


def build_tuner(cfg: SweepConfig, callbacks: list, trial_fn=sweep_trial,
                repeats: list[dict] | None = None) -> tune.Tuner:
    """A new Tuner, or with `cfg.resume` the interrupted one; `trial_fn(config, sweep)`.

    ``repeats``: instead of the search, run exactly these configs (the repeats phase: every
    trial to its last epoch, no scheduler). A restored Tuner runs the callbacks it saved with
    the sweep, not `callbacks`.
    """
    # Tune's per-trial result.json and progress.csv, which the ResultGrid reads, whatever
    # TUNE_DISABLE_AUTO_CALLBACK_LOGGERS says (`main` sets it).
    callbacks = [*callbacks, CSVLoggerCallback(), JsonLoggerCallback()]
    scheduler = None
    if repeats is None:
        scheduler = ASHAScheduler(time_attr="epoch", max_t=cfg.max_epochs,
                                  grace_period=cfg.grace_period,
                                  reduction_factor=cfg.reduction_factor)
        callbacks.append(SchedulerState(scheduler))  # its rungs, saved with Tune's state
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, sweep=cfg),
        {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})
    path = cfg.sweep_path if repeats is None else repeats_path(cfg)
    run_config = tune.RunConfig(
        name=path.rsplit("/", 1)[1], storage_path=cfg.storage_path, callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        # Two, not one: Tune deletes the older checkpoint when the newer one reaches the driver,
        # but the experiment state that --resume reads is saved only now and then, so after a
        # killed driver it may still name the older one (see sweeps._resume.heal_checkpoints).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=0)
    if cfg.resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
        apply_harmless(tuner, cfg)
        heal_checkpoints(tuner)
        return tuner
    common = {"metric": METRIC, "mode": MODE, "trial_dirname_creator": trial_dirname,
              # A new trial reuses a finished one's process: no second torch import, and the
              # node's caches are warm.
              "reuse_actors": True}
    if repeats is not None:
        tune_config = tune.TuneConfig(
            search_alg=Limiter(FixedConfigs(repeats), cfg.max_concurrent),
            num_samples=len(repeats), **common)
    else:
        tune_config = tune.TuneConfig(scheduler=scheduler, search_alg=_searcher(cfg),
                                      num_samples=cfg.num_samples, **common)
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


@dataclasses.dataclass
class GridTrial:
    """A trial of a ResultGrid as `analysis.best` ranks it."""

    trial_id: str
    config: dict
    status: str
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


def grid_trials(result_grid, max_epochs: int) -> list[GridTrial]:
    """Every trial of ``result_grid`` with its status as the report names it."""
    out = []
    for result in result_grid:
        df = result.metrics_dataframe
        last = result.metrics or {}
        best_val = best_epoch = None
        if df is not None and METRIC in df and df[METRIC].notna().any():
            row = df.loc[df[METRIC].idxmax()]  # the earliest epoch with the highest value
            best_val, best_epoch = float(row[METRIC]), int(row["epoch"])
        diverged = df is not None and "diverged" in df and bool((df["diverged"] > 0).any())
        if result.error:
            status = FAILED
        elif diverged:
            status = DIVERGED
        elif last.get("epoch", 0) >= max_epochs:
            status = FINISHED
        else:  # ASHA's stop carries `done`; without it the sweep was cut off
            status = STOPPED_EARLY if last.get("done") else INTERRUPTED
        trial_id = last.get("trial_id") or (result.path or "").rsplit("/", 1)[-1]
        out.append(GridTrial(str(trial_id), dict(result.config or {}), status, best_val,
                             best_epoch))
    return out


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


def results_table(result_grid) -> pa.Table:
    """One row per trial: its sampled config, status and last/best metrics."""
    rows = []
    for result in result_grid:
        config = {f"config/{k}": v for k, v in (result.config or {}).items()
                  if isinstance(v, (int, float, str, bool))}
        df = result.metrics_dataframe
        best = float(df[METRIC].max()) if df is not None and METRIC in df else float("nan")
        last = result.metrics or {}
        rows.append({**config, "trial_id": last.get("trial_id", ""),
                     "error": str(result.error) if result.error else "",
                     "epochs": int(last.get("epoch", 0)), f"best_{METRIC}": best,
                     **{k: last.get(k) for k in ("val/acc", "test/acc", "train/loss",
                                                 "diverged")}})
    return pa.Table.from_pylist(rows)


def _finish(cfg: SweepConfig, result_grid, out: Path, phase: str = "search") -> None:
    """The phase's results table on disk and on the parent run; the search's best trial."""
    table = results_table(result_grid)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("results.parquet" if phase == "search" else f"{phase}.parquet")
    pq.write_table(table, path)
    print(f"\n{len(table)} trials ({phase}); results table: {path}")
    best_config = None
    if phase == "search":  # the best trial as the progress line and the report have it
        best = best_of(grid_trials(result_grid, cfg.max_epochs), key=lambda t: t.rank)
        if best is None:
            print(f"no trial has a finite {METRIC} yet")
        else:
            best_config = best.config
            print(f"best {METRIC} = {best.best_val:.4f} (epoch {best.best_epoch}, "
                  f"{best.status.replace('_', ' ')}) with {describe(best_config)}")
    _log_to_parent(cfg, path, best_config)


def _log_to_parent(cfg: SweepConfig, table: Path, best_config: dict | None) -> None:
    """The results table and best config as artifacts of the sweep's parent run.

    The run is looked up in MLflow, not taken from this driver's tracking callback: after
    ``--resume``, Tune runs the callbacks it restored from the sweep's state, not new ones.
    """
    try:
        probe(cfg.tracking_uri)
        client = MlflowClient(cfg.tracking_uri)
        exp = client.get_experiment_by_name(cfg.experiment)
        parent = exp and find_parent_run(client, exp.experiment_id, cfg.sweep_name,
                                         read_sweep_id(cfg))
        if not parent:
            return
        client.log_artifact(parent.info.run_id, str(table))
        if best_config is not None:
            client.log_dict(parent.info.run_id, dict(best_config), "best_config.json")
    except Exception as e:  # noqa: BLE001 - the results are on disk either way
        _logger.warning("could not log the results to MLflow at %s (%s); they are in %s",
                        cfg.tracking_uri, e, table)


def _prepare(cfg: SweepConfig) -> dict | None:
    """Check what can be checked before Ray starts, and download the checkpoint and the data
    here, once, so that bad input fails before any trial. Returns a resumed sweep's record."""
    exists = tune.Tuner.can_restore(cfg.sweep_path)
    if cfg.resume and not exists:
        _bad_input(f"--resume: there is no sweep to resume at {cfg.sweep_path}")
    if exists and not cfg.resume:  # a second fresh run would merge into it (Ray, Optuna, MLflow)
        _bad_input(f"--name: a sweep named {cfg.sweep_name!r} already exists at "
                   f"{cfg.sweep_path}; continue it with --resume, or start another with "
                   "--name NEW_NAME")
    try:
        record = resumed_record(cfg) if cfg.resume else None
    except ValueError as e:
        _bad_input(str(e))
    try:
        resolve_checkpoint(cfg.ghn)
    except FileNotFoundError as e:
        _bad_input(f"--ghn: {e}")
    if tune.Tuner.can_restore(repeats_path(cfg)) and not cfg.resume:
        _bad_input(f"--name: the repeats of a sweep named {cfg.sweep_name!r} exist at "
                   f"{repeats_path(cfg)}; continue it with --resume, or start another with "
                   "--name NEW_NAME")
    data = trial_config(baseline_configs(cfg)[0], cfg).data
    try:
        prepare_data(data)
    except (OSError, RuntimeError, ValueError) as e:
        _bad_input(f"--dataset {cfg.dataset!r}: {e}")
    return record


def _refuse_name_clash(cfg: SweepConfig, tracking: MlflowTrackingCallback) -> None:
    """A fresh sweep must not share its parent run's name with another sweep's."""
    other = tracking.other_parent_run()
    if other is not None:
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(other.info.start_time / 1000))
        _bad_input(f"--name: MLflow experiment {cfg.experiment!r} at {cfg.tracking_uri} already "
                   f"holds a sweep named {cfg.sweep_name!r} (parent run {other.info.run_id}, "
                   f"started {started}), whose Ray results are not at {cfg.sweep_path}. Start "
                   "this sweep with --name NEW_NAME, or continue that one with --resume and the "
                   "--storage it used")


def _refuse_other_store(cfg: SweepConfig, tracking: MlflowTrackingCallback,
                        stored_uri: str) -> None:
    """A resumed sweep's new --tracking-uri must reach the store that holds its parent run."""
    if tracking.has_parent_run() is False:
        _bad_input(f"--tracking-uri: the MLflow store at {cfg.tracking_uri} holds no parent run "
                   f"of this sweep (experiment {cfg.experiment!r}, sweep id "
                   f"{tracking.sweep_id}); it is tracked at {stored_uri}: resume it with that "
                   "--tracking-uri, or the same store's new address")


def _store_exists(uri: str) -> bool:
    """False only for a SQLite store whose file is not there yet."""
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def start_ray(cfg: SweepConfig) -> None:
    """Join the cluster at ``--address``, or start Ray in this process, on 127.0.0.1 only
    (`sweeps._loopback.start_local_ray`)."""
    if cfg.address:
        ray.init(address=cfg.address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        start_local_ray()


def _bad_input(message: str) -> typing.NoReturn:
    """Exit with status 2, as argparse does for bad flags."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    """The sweep command: flags in, exit status out (2: bad input, 130: interrupted)."""
    cfg, dry_run = parse_command(argv)
    if dry_run:
        print(json.dumps(plan(cfg), indent=2))
        return 0
    return run(cfg, argv)


def run(cfg: SweepConfig, argv: list[str] | None = None) -> int:
    """Run the sweep ``cfg``: the search, then the repeats; ``argv`` (default
    ``sys.argv[1:]``) is echoed in the hint to ``--resume`` an interrupted sweep."""
    record = _prepare(cfg)
    sweep_id = str(record["sweep_id"]) if record else new_sweep_id()
    # Checkpointing every epoch (--checkpoint-every 1) is deliberate; don't warn about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # MLflow is the sweep's record: no third copy of the metrics as TensorBoard events (with
    # tensorboardX installed they cost the driver ~70 ms per trial, between trials).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    tracking = _tracking(cfg, sweep_id, final=cfg.repeats == 0)
    new_store = not _store_exists(cfg.tracking_uri)  # asked before connect() creates it
    tracking.connect()  # in the background, while the name is checked and Ray starts
    if not cfg.resume:  # before Ray starts: a clash exits 2, with no run and no Ray experiment
        if not new_store:  # a new store holds no sweep: don't wait ~4 s for its creation
            _refuse_name_clash(cfg, tracking)
        write_sweep_id(cfg, sweep_id)
    elif record.get("config", {}).get("tracking_uri", cfg.tracking_uri) != cfg.tracking_uri:
        _refuse_other_store(cfg, tracking, record["config"]["tracking_uri"])
    start_ray(cfg)
    start = time.time()
    out = cfg.results_dir or Path.cwd() / cfg.sweep_name  # remote storage: the tables go here
    search = build_tuner(cfg, [tracking, ProgressCallback(METRIC, cfg.max_epochs, tracking)])
    result_grid = search.fit()
    _finish(cfg, result_grid, out)
    interrupted = _interrupted(result_grid, cfg.num_samples)
    configs = repeat_configs(cfg, grid_trials(result_grid, cfg.max_epochs)) \
        if cfg.repeats and not interrupted else []
    if cfg.repeats and not interrupted and not configs:
        print("repeats: no trial of the search can be repeated (all failed or diverged)")
        tracking.close_parent()
    if configs:
        print(f"repeats: {len(configs) // cfg.repeats} configurations x {cfg.repeats} seeds")
        tracking = _tracking(cfg, sweep_id, final=True, phase="repeats")
        progress = ProgressCallback(METRIC, cfg.max_epochs, tracking, phase="repeats")
        result_grid = build_tuner(cfg, [tracking, progress], repeats=configs).fit()
        _finish(cfg, result_grid, out, phase="repeats")
        interrupted = _interrupted(result_grid, len(configs))
    print(f"sweep took {time.time() - start:.0f} s. Browse it: mlflow ui --backend-store-uri "
          f"{cfg.tracking_uri}")
    print(f"Report it: python -m analysis.report --experiment {shlex.quote(cfg.experiment)} "
          f"--sweep {shlex.quote(cfg.sweep_name)} --tracking-uri {shlex.quote(cfg.tracking_uri)}")
    if interrupted:  # Ctrl-C: what ran is kept, the rest can follow
        args = list(sys.argv[1:] if argv is None else argv)
        again = shlex.join(["python", sys.argv[0], *args, *([] if cfg.resume else ["--resume"])])
        print(f"interrupted before all trials ended. Continue it: {again}")
        return 130
    return 0


def _tracking(cfg: SweepConfig, sweep_id: str, final: bool,
              phase: str = "search") -> MlflowTrackingCallback:
    """The tracking callback of one phase; ``final``: its end closes the parent run."""
    return MlflowTrackingCallback(
        tracking_uri=cfg.tracking_uri, experiment=cfg.experiment, sweep=cfg.sweep_name,
        sweep_params={f"sweep.{k}": v for k, v in cfg.__dict__.items()}, sweep_id=sweep_id,
        final=final, phase=phase)


def _interrupted(result_grid, total: int) -> bool:
    return sweep_interrupted([bool(r.error or (r.metrics or {}).get("done"))
                              for r in result_grid], total)
