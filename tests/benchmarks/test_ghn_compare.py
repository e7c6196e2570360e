"""benchmarks/ghn_compare.py at seconds-scale sizes: both kinds train, are evaluated on held-out
architectures, and fine-tune with paired gains."""

import re

import pytest

from ghn import GHN2, GHN3, load_ghn


@pytest.mark.slow  # ~20 s on 2 cores: two 2-step GHNs, 12 one-epoch fine-tuning trials
def test_ghn_compare_trains_both_kinds_and_prints_accuracy_and_gains(cifar_jpeg_dir, tmp_path,
                                                                    run_benchmark):
    out = run_benchmark(
        "ghn_compare", "--data", str(cifar_jpeg_dir), "--minutes", "0.5", "--max-steps", "2",
        "--hid", "8", "--heads", "2", "--layers", "1", "--meta-batch", "1", "--batch-size", "8",
        "--image-size", "16", "--held-out", "2", "--families", "resnet",
        "--train-per-class", "4", "--eval-per-class", "4", "--stem", "standard",
        "--epochs", "1", "--seeds", "2", "--lrs", "0.01", "--n-shots", "4",
        "--val-per-class", "4", "--test-per-class", "4", "--out", str(tmp_path / "out"),
        cwd=tmp_path)
    assert isinstance(load_ghn(tmp_path / "out" / "ghn2.pt"), GHN2)
    ghn3 = load_ghn(tmp_path / "out" / "ghn3.pt")
    assert isinstance(ghn3, GHN3) and ghn3.classes == (
        "airplane", "automobile", "bird", "cat", "deer")
    summary = out.split("summary:")[1]
    for kind in ("ghn2", "ghn3"):
        assert re.search(rf"^{kind}: 2 steps in \d+ s \(budget 0.5 min\); held-out top-1 "
                         r"[\d.]+% \(95% interval -?[\d.]+ to [\d.]+% over 2 architectures",
                         summary, re.M), out
        for init in ("ghn", "ghn+pp"):
            assert re.search(rf"^{kind} fine-tuning gain\[{re.escape(init)}\]=[+-][\d.]+ points "
                             r"\(95% interval .* paired over 2 seeds\)", summary, re.M), out
    # Random init's runs do not depend on the GHN: one per seed, shared by both kinds; each
    # kind's own inits run once per seed.
    runs = re.findall(r"^seed (\d) (\S+)\s+lr", out, re.M)
    assert sorted(runs) == sorted([(s, i) for s in "12" for i in ("random", "ghn", "ghn+pp")]
                                  + [(s, i) for s in "12" for i in ("ghn", "ghn+pp")])
