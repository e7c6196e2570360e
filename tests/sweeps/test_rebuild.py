"""`python -m sweeps.rebuild` completes a sweep's MLflow record from Ray's results, idempotently."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from contract import SWEEP_TAG, TRIAL_ID_TAG
from sweeps.rebuild import main


def _trial_dir(sweep, trial_id, epochs, done=True, errored=False):
    d = sweep / f"sweep_trial_{trial_id}_1_resnet18_ghn_lr=0.01"
    d.mkdir(parents=True, exist_ok=True)
    (d / "params.json").write_text(json.dumps({"arch": "resnet18", "init": "ghn",
                                               "optim.lr": 0.01}))
    lines = [{"trial_id": trial_id, "epoch": float(e), "val/acc": 0.1 * e, "train/loss": 1.0 / e,
              "diverged": 0.0, "done": done and e == epochs} for e in range(1, epochs + 1)]
    (d / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if errored:
        (d / "error.txt").write_text("boom")


def _record(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if SWEEP_TAG in r.data.tags]
    children = {r.data.tags[TRIAL_ID_TAG]: r for r in runs if TRIAL_ID_TAG in r.data.tags}
    history = {t: [m.step for m in client.get_metric_history(r.info.run_id, "val/acc")]
               for t, r in children.items()}
    return parents, {t: r.info.status for t, r in children.items()}, history


def test_rebuild_completes_a_partial_record_and_changes_nothing_when_run_again(
        tmp_path, new_mlflow_store):
    sweep = tmp_path / "ray" / "sw"
    sweep.mkdir(parents=True)
    (sweep / "ghn_sweep.json").write_text(json.dumps(
        {"sweep_id": "id1", "sweep": "sw", "config": {"experiment": "exp"}}))
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    _trial_dir(sweep, "aaaa0001", 1, done=False)  # the record as an outage left it
    assert main([str(sweep), "--tracking-uri", uri]) == 0
    _trial_dir(sweep, "aaaa0001", 3)
    _trial_dir(sweep, "bbbb0002", 2, done=False, errored=True)
    for _ in range(2):
        assert main([str(sweep), "--tracking-uri", uri]) == 0
        parents, statuses, history = _record(uri)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert statuses == {"aaaa0001": "FINISHED", "bbbb0002": "FAILED"}
        assert history == {"aaaa0001": [1, 2, 3], "bbbb0002": [1, 2]}


def test_rebuild_refuses_a_directory_that_is_not_a_sweep(tmp_path, capsys):
    assert main([str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    assert "not a sweep's Ray results" in capsys.readouterr().err
