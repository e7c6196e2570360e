"""Checkpoint retention keyed to Tune's snapshots: what goes, when, and at what cost."""

from ray import tune

from sweeps._retention import LAG, CheckpointRetention


class FakeTrial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def _checkpoint(tmp_path, trial_id, n):
    path = tmp_path / trial_id / f"checkpoint_{n:06d}"
    path.mkdir(parents=True)
    (path / "trial.pt").write_bytes(b"x")
    return tune.Checkpoint.from_directory(str(path))


def _two_checkpoints_each(keep: CheckpointRetention, tmp_path, *trial_ids: str) -> list:
    """Trials named ``trial_ids``, each having made checkpoints 0 and 1 under ``keep``."""
    trials = [FakeTrial(trial_id) for trial_id in trial_ids]
    for trial in trials:
        for n in range(2):
            keep.on_checkpoint(0, [], trial, _checkpoint(tmp_path, trial.trial_id, n))
    return trials


def test_a_superseded_checkpoint_goes_only_after_lag_snapshots_name_a_newer_one(tmp_path):
    keep = CheckpointRetention()
    trial = FakeTrial("t1")
    made = [_checkpoint(tmp_path, "t1", n) for n in range(3)]
    for checkpoint in made:
        keep.on_checkpoint(0, [], trial, checkpoint)
    keep.get_state()  # this snapshot names made[2] as t1's newest: made[0:2] are superseded
    for _ in range(LAG - 1):
        keep.get_state()
    assert all((tmp_path / "t1" / f"checkpoint_{n:06d}").exists() for n in range(3))
    keep.get_state()  # LAG snapshots later
    assert [p.name for p in sorted((tmp_path / "t1").iterdir())] == ["checkpoint_000002"]


def test_an_ended_trials_newest_checkpoint_stays_and_it_leaves_the_state(tmp_path):
    keep = CheckpointRetention()
    trial = FakeTrial("t1")
    for n in range(2):
        keep.on_checkpoint(0, [], trial, _checkpoint(tmp_path, "t1", n))
    keep.on_trial_complete(0, [], trial)
    for _ in range(LAG + 2):
        state = keep.get_state()
    assert state["kept"] == {}  # a finished trial is no longer carried in Tune's snapshots
    assert [p.name for p in (tmp_path / "t1").iterdir()] == ["checkpoint_000001"]


def test_a_finished_repeat_keeps_no_checkpoint_and_an_errored_one_keeps_its_newest(tmp_path):
    keep = CheckpointRetention(keep_ended=False)
    done, failed = _two_checkpoints_each(keep, tmp_path, "done", "failed")
    keep.get_state()  # both newest checkpoints recorded while the trials still run
    keep.on_trial_complete(0, [], done)
    keep.on_trial_error(0, [], failed)
    keep.get_state()  # the snapshot that records how they ended
    for _ in range(LAG - 1):
        keep.get_state()
    assert (tmp_path / "done" / "checkpoint_000001").exists()  # a kill now resumes from it
    state = keep.get_state()
    assert state["kept"] == {}
    assert list((tmp_path / "done").iterdir()) == []
    assert [p.name for p in (tmp_path / "failed").iterdir()] == ["checkpoint_000001"]


def test_the_experiments_end_deletes_what_its_last_snapshot_no_longer_names(tmp_path):
    keep = CheckpointRetention(keep_ended=False)
    done, _ = _two_checkpoints_each(keep, tmp_path, "done", "running")
    keep.on_trial_complete(0, [], done)
    keep.on_experiment_end([])  # no snapshot has recorded any of this: nothing goes
    assert len(list(tmp_path.glob("*/checkpoint_*"))) == 4
    keep.get_state()  # Tune's final snapshot (an interrupted sweep: one trial still runs)
    keep.on_experiment_end([])
    assert list((tmp_path / "done").iterdir()) == []
    assert [p.name for p in (tmp_path / "running").iterdir()] == ["checkpoint_000001"]


def test_a_snapshot_restored_after_a_kill_deletes_what_is_left_and_skips_what_is_gone(tmp_path):
    keep = CheckpointRetention()
    trial = FakeTrial("t1")
    for n in range(3):
        keep.on_checkpoint(0, [], trial, _checkpoint(tmp_path, "t1", n))
    saved = keep.get_state()
    restored = CheckpointRetention()
    restored.set_state(saved)
    (tmp_path / "t1" / "checkpoint_000000" / "trial.pt").unlink()
    (tmp_path / "t1" / "checkpoint_000000").rmdir()  # the killed driver got to it first
    for _ in range(LAG):
        restored.get_state()
    assert [p.name for p in (tmp_path / "t1").iterdir()] == ["checkpoint_000002"]


class CountingDict(dict):
    """A ``kept`` dict that counts how often all of it is read."""

    reads = 0

    def __iter__(self):
        CountingDict.reads += 1
        return super().__iter__()

    def items(self):
        CountingDict.reads += 1
        return super().items()

    def values(self):
        CountingDict.reads += 1
        return super().values()


def test_a_snapshot_handles_only_the_trials_that_changed_since_the_last(tmp_path):
    keep = CheckpointRetention()
    keep.kept = CountingDict({f"t{i}": [] for i in range(1000)})
    trial = FakeTrial("t7")
    keep.on_checkpoint(0, [], trial, _checkpoint(tmp_path, "t7", 0))
    keep.get_state()
    assert CountingDict.reads == 0 and len(keep.kept["t7"]) == 1
