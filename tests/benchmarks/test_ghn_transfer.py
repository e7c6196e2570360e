"""benchmarks/ghn_transfer.py at tiny sizes: every init runs, lr is chosen, gains are paired."""

import re

import pytest


@pytest.mark.slow  # ~30 s on 2 cores: 2 seeds x 3 inits x 2 lrs of one-epoch trials
def test_ghn_transfer_prints_chosen_lrs_and_paired_gains(reference_dir, cifar_jpeg_dir, tmp_path,
                                                         run_benchmark):
    out = run_benchmark(
        "ghn_transfer", "--ghn", str(reference_dir / "ghn2_random_cifar10_seed0.pt"), "--data",
        str(cifar_jpeg_dir), "--classes", "dog,ship", "--stem", "standard", "--epochs", "1",
        "--seeds", "2", "--lrs", "0.01,0.05", "--n-shots", "4", "--val-per-class", "4",
        "--test-per-class", "4", cwd=tmp_path)
    assert len(re.findall(r"^seed \d (random|ghn|ghn\+pp) +lr ", out, re.M)) == 12, out
    for init in ("random", "ghn", "ghn+pp"):
        assert re.search(rf"^{re.escape(init)} +lr 0\.0[15] \(mean val/acc", out, re.M), out
    for init in ("ghn", "ghn+pp"):
        assert f"ghn_transfer_gain_points[{init}]=" in out and "paired over 2 seeds" in out, out
