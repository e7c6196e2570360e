"""--resume: the flags compared with the sweep's stored configuration; the searcher reconciled
with its study after a killed driver."""

from __future__ import annotations

import dataclasses
import logging

import optuna
import pytest

from sweeps._config import SweepConfig
from sweeps._identity import write_sweep_id
from sweeps._preflight import HARMLESS, BadInput, config_changes, preflight, resumed_record
from sweeps._searchers import PrunedAwareOptunaSearch


def _started(tmp_path, **fields) -> SweepConfig:
    """A sweep as its first start left it: its record and a Tuner pickle to restore."""
    cfg = SweepConfig(storage=str(tmp_path / "ray"), **fields)
    write_sweep_id(cfg, "id-1")
    (tmp_path / "ray" / cfg.sweep_name / "tuner.pkl").write_bytes(b"")
    return cfg


def test_changes_that_alter_the_search_or_the_trials_are_told_from_harmless_ones(tmp_path):
    cfg = _started(tmp_path)
    stored = _record(cfg)
    changed = dataclasses.replace(cfg, seed=1, max_epochs=5, beta_max=1e-2, max_concurrent=8,
                                  tracking_uri="sqlite:///elsewhere.db", resume=True)
    harmful, harmless = config_changes(stored, changed)
    assert [f for f, _, _ in harmful] == ["beta_max", "max_epochs", "seed"]
    assert harmless == [("max_concurrent", 2, 8),
                        ("tracking_uri", "sqlite:///mlflow.db", "sqlite:///elsewhere.db")]
    assert config_changes(stored, dataclasses.replace(cfg, resume=True)) == ([], [])
    explicit = dataclasses.replace(cfg, name=cfg.sweep_name, resume=True)  # the same sweep
    assert config_changes(stored, explicit) == ([], [("name", "", "noise_vs_lr-smoke")])


def test_a_gpu_share_is_harmless_but_a_change_of_device_is_not(tmp_path):
    stored = _record(_started(tmp_path, gpus_per_trial=0.25))
    cfg = SweepConfig(storage=str(tmp_path / "ray"), resume=True)
    assert config_changes(stored, dataclasses.replace(cfg, gpus_per_trial=0.5))[0] == []
    harmful, _ = config_changes(stored, cfg)  # 0.25 -> 0: the trials would train on the CPU
    assert harmful == [("gpus_per_trial", 0.25, 0.0)]
    assert set(HARMLESS) <= {f.name for f in dataclasses.fields(SweepConfig)}


def test_resume_with_changed_search_flags_is_refused_naming_them(tmp_path):
    cfg = _started(tmp_path)
    with pytest.raises(BadInput) as e:
        preflight(dataclasses.replace(cfg, seed=3, num_samples=20, resume=True))
    err = str(e.value)
    assert "--num-samples 8 -> 20" in err and "--seed 0 -> 3" in err and "--name" in err


def test_resume_accepts_and_says_harmless_changes(tmp_path, caplog):
    cfg = _started(tmp_path)
    with caplog.at_level(logging.INFO, logger="sweeps._preflight"):
        record = resumed_record(dataclasses.replace(cfg, max_concurrent=4, resume=True))
    assert record["sweep_id"] == "id-1"
    assert "resume: --max-concurrent 2 -> 4 accepted: how many trials run at once" in caplog.text


def _record(cfg):
    from sweeps._identity import read_sweep_record

    return read_sweep_record(cfg)["config"]


def _searcher(tmp_path):
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    search = PrunedAwareOptunaSearch(space=space, metric="val/acc", mode="max", storage=storage,
                                     study_name="s", max_epochs=3)
    return search


def test_restored_searcher_skips_what_its_study_was_told_after_the_saved_state(tmp_path,
                                                                              caplog):
    """The study (SQLite) runs ahead of Tune's saved state: a trial that ended after the last
    state save is run again by Tune but told once; a trial started after it is failed."""
    search = _searcher(tmp_path)
    search.suggest("a")
    search.save(str(tmp_path / "searcher.pkl"))  # Tune's last saved state
    final = {"val/acc": 0.5, "epoch": 3, "training_iteration": 3}
    search.on_trial_complete("a", final)  # told after the save
    search.suggest("orphan")  # started after the save; then the driver is killed
    restored = _searcher(tmp_path)
    restored.restore(str(tmp_path / "searcher.pkl"))
    with caplog.at_level("WARNING"):
        restored.on_trial_result("a", final)  # Tune re-runs "a" from its checkpoint
        restored.on_trial_complete("a", final)
    assert not [r for r in caplog.records if "Cannot tell" in r.getMessage()]
    states = [t.state for t in restored._ot_study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert restored._ot_study.trials[0].value == 0.5
