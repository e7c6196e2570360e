"""The function Tune runs for a sweep's trial: where its checkpoints are written."""

from sweeps import _trial
from sweeps._config import SweepConfig
from trainable import TrialConfig


def test_a_sweeps_trials_stage_in_its_results_dir_when_the_storage_is_local(tmp_path,
                                                                              monkeypatch):
    given = []
    monkeypatch.setattr(_trial, "run_trial", lambda flat, staging_dir: given.append(staging_dir))
    monkeypatch.setattr(_trial, "trial_config", lambda config, sweep: TrialConfig())
    local = SweepConfig(storage=str(tmp_path / "ray"))
    _trial.sweep_trial({}, local)
    _trial.sweep_trial({}, SweepConfig(storage="s3://bucket/sweeps"))
    assert given == [str(tmp_path / "ray" / local.sweep_name / ".staging"), None]

    left = tmp_path / "ray" / local.sweep_name / ".staging" / "checkpoint-abc"
    left.mkdir(parents=True)  # what a killed driver's trial was writing
    _trial.clear_staging(local)
    assert not left.parent.exists()
