import math

import pytest

from contract import REPORTED_METRICS, TAGS_KEY
from trainable import TrialConfig, train


class Stop(Exception):
    pass


def _collect(after=None):
    """A report callback that records metrics, and raises Stop after epoch `after`."""
    seen = []

    def report(metrics):
        seen.append(metrics)
        if after is not None and metrics["epoch"] == after:
            raise Stop

    return seen, report


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_random_init_resnet18_learns_above_chance(tiny):
    cfg = TrialConfig.from_flat(tiny(**{"data.n_shots": 100, "data.val_per_class": 20,
                                        "data.test_per_class": 50}))
    seen, report = _collect()
    last = train(cfg, report=report)
    assert [m["epoch"] for m in seen] == [1.0, 2.0, 3.0]
    assert set(REPORTED_METRICS) <= set(seen[0]) and set(REPORTED_METRICS) <= set(seen[-1])
    assert any(k.startswith("init/") for k in seen[0])  # diversity once, at the start
    assert not any(k.startswith("init/") for k in seen[1])
    assert seen[0][TAGS_KEY]["init"] == "random"
    assert last["diverged"] == 0.0 and last["images_per_s"] > 0
    # 10 classes: chance is 0.10; three epochs of 1000 images reach about 0.3 here.
    assert last["test/acc"] > 0.15, last
    assert last["train/loss"] < seen[0]["train/loss"]
    assert seen[0]["lr"] == pytest.approx(0.05) and last["lr"] < seen[0]["lr"]  # cosine


@pytest.mark.slow
def test_interrupted_trial_resumes_identically_and_tests_only_when_validation_improves(
        tiny, tmp_path):
    flat = tiny(**{"optim.epochs": 5})
    every, report = _collect()
    train(TrialConfig.from_flat(flat), report=report)
    cfg = TrialConfig.from_flat({**flat, "test_eval": "on_best_val"})
    first, report = _collect(after=2)
    with pytest.raises(Stop):
        train(cfg, report=report, checkpoint_dir=tmp_path)
    rest, report = _collect()
    train(cfg, report=report, checkpoint_dir=tmp_path)  # the best so far survives the resume
    sparse, best = first + rest, -math.inf
    assert [m["epoch"] for m in sparse] == [1.0, 2.0, 3.0, 4.0, 5.0]
    for e, s in zip(every, sparse):  # the same training, through the resume after epoch 2:
        for key in ("train/loss", "val/loss", "val/acc"):  # model, optimiser, schedule, RNG
            assert s[key] == pytest.approx(e[key], rel=1e-5), (key, s["epoch"])
        due = s["val/acc"] > best or s["epoch"] == 5
        assert ("test/acc" in s) == due, s
        if due:
            assert s["test/acc"] == pytest.approx(e["test/acc"], rel=1e-5)
        best = max(best, s["val/acc"])
    assert any("test/acc" not in s for s in sparse)  # some epoch did not improve: test skipped


@pytest.mark.slow
def test_checkpoint_from_other_config_is_refused(tiny, tmp_path):
    train(TrialConfig.from_flat(tiny(**{"optim.epochs": 1})), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="optim.lr"):
        train(TrialConfig.from_flat(tiny(**{"optim.epochs": 2, "optim.lr": 0.1})),
              checkpoint_dir=tmp_path)


@pytest.mark.slow
def test_divergence_ends_cleanly_with_a_diverged_report(tiny, tmp_path):
    cfg = TrialConfig.from_flat(tiny(**{"optim.lr": 1e4, "optim.epochs": 6,
                                        "optim.schedule": "constant"}))
    seen, report = _collect()
    last = train(cfg, report=report, checkpoint_dir=tmp_path)
    assert last["diverged"] == 1.0 and seen[-1] is not None and seen[-1]["diverged"] == 1.0
    assert len(seen) < 6 and all(m["diverged"] == 0.0 for m in seen[:-1])
    assert not math.isfinite(last["train/loss"])
    assert set(REPORTED_METRICS) <= set(last)
