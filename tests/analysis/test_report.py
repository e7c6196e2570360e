"""The report on a synthetic sweep with known numbers: tables, choices, sentences, figures."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from matplotlib.container import ErrorbarContainer

from analysis import CURVES_SCHEMA, TRIALS_SCHEMA

REPO = Path(__file__).resolve().parents[2]


def panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def points(ax):
    return sum(len(c.get_offsets()) for c in ax.collections)


def test_trials_table(report):
    table = pq.read_table(report.out / "trials.parquet")
    assert table.schema.equals(TRIALS_SCHEMA, check_metadata=True)
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == sorted(["r1", "r2", "g1", "p1", "p2", "p3", "p4", "p5",
                                   "c1", "c2", "c3"])  # x1 of sweepB is not here
    assert {k: r["status"] for k, r in rows.items() if r["status"] != "finished"} == {
        "r2": "stopped_early", "p5": "stopped_early", "p3": "diverged", "p4": "failed"}
    p1 = rows["p1"]
    assert (p1["method"], p1["beta"], p1["orth"], p1["lr"]) == ("ghn+pp", 3e-5, True, 0.012)
    assert (p1["best_val_acc"], p1["best_epoch"], p1["test_acc_at_best"]) == (0.62, 3, 0.561)
    assert (p1["final_val_acc"], p1["final_test_acc"], p1["epochs_run"]) == (0.61, 0.60, 4)
    assert p1["train_time_s"] == 8.0 and p1["epochs_planned"] == 4
    assert p1["init_eff_rank_ratio"] == 0.9 and p1["wall_time_s"] is not None
    assert (rows["g1"]["method"], rows["g1"]["beta"]) == ("ghn", 0.0)
    assert rows["r2"]["epochs_run"] == 2 and rows["r1"]["method"] == "random"
    p4 = rows["p4"]  # failed before reporting: config from Tune's raw params, no numbers
    assert (p4["lr"], p4["beta"], p4["epochs_run"], p4["best_val_acc"]) == (0.05, 1e-5, 0, None)


def test_curves_table(report):
    table = pq.read_table(report.out / "curves.parquet")
    assert table.schema.equals(CURVES_SCHEMA, check_metadata=True)
    assert table.num_rows == 34  # epochs run over all trials; p4 has none
    p1 = [r for r in table.to_pylist() if r["trial_id"] == "p1"]
    assert [r["epoch"] for r in p1] == [1, 2, 3, 4]
    assert [r["val_acc"] for r in p1] == [.50, .60, .62, .61]
    assert all(r["method"] == "ghn+pp" and r["epoch_time_s"] == 2.0 for r in p1)


def test_best_configuration_per_arch(report):
    comp = report.tables["comparison"]
    best = {(r.arch, r.method): r.trial_id for r in comp.itertuples()}
    assert best == {("resnet50", "random"): "r1", ("resnet50", "ghn"): "g1",
                    ("resnet50", "ghn+pp"): "p1", ("convnext_base", "random"): "c1",
                    ("convnext_base", "ghn"): "c2", ("convnext_base", "ghn+pp"): "c3"}
    gains = {(r.arch, r.method): round(r.gain_points, 6) for r in comp.itertuples()}
    assert gains[("resnet50", "ghn+pp")] == 4.1 and gains[("convnext_base", "ghn")] == 1.0


def test_sentences(report):
    """Without repeats: single runs, said to be no evidence."""
    s = report.sentences
    assert ("For resnet50, GHN + noise beta=3e-5 + orth (lr=0.012) beats random init by 4.1 "
            "points in the search's single runs; one draw each, no interval: not evidence either "
            "way (run with --repeats 2 or more).") in s
    assert ("For resnet50, GHN without post-processing (lr=0.01) beats random init by 2.5 points "
            "in the search's single runs; one draw each, no interval: not evidence either way "
            "(run with --repeats 2 or more).") in s
    assert ("For resnet50, the search's best configuration is GHN + noise beta=3e-5 + orth at "
            "lr=0.012: 62.0% validation, 56.1% test accuracy (trial p1).") in s
    assert ("For resnet50, random init (lr=0.01, chosen by validation accuracy) reaches 52.0% "
            "test accuracy (the search's single run, no repeats).") in s
    assert ("For resnet50, post-processing changes GHN's test accuracy by +1.6 points in the "
            "search's single runs (no interval).") in s
    assert ("For resnet50 at lr≈0.012, the search's best noise strength is beta=3e-5 (56.1% "
            "test accuracy; without noise 54.5%, random init 52.0%; single runs).") in s
    assert ("The gain of GHN (+ post-processing) over random init is largest for resnet50 "
            "(+4.1 points) and smallest for convnext_base (+2.0 points; single runs for some: "
            "see the intervals above).") in s
    text = (report.out / "report.md").read_text()
    assert all(sentence in text for sentence in s)
    assert "**State: finished**" in text and "99.0%" not in text  # sweepB stayed out


def test_figures(report):
    for name in report.figures:
        assert (report.out / name).stat().st_size > 10_000, name
    heat = {ax.get_title(): points(ax) for ax in panels(report.figures["heatmaps.png"])}
    assert heat == {"convnext_base / ghn (2 trials)": 2, "convnext_base / random (1 trials)": 1,
                    "resnet50 / ghn (6 trials)": 6, "resnet50 / random (2 trials)": 2}
    noise = panels(report.figures["noise_vs_beta.png"])
    assert [points(ax) for ax in noise] == [1, 3]  # convnext c3; resnet50 p1, p2, p5 (near lr)
    assert all(len(ax.get_lines()) == 2 for ax in noise)  # no-noise and random reference lines
    assert [round(line.get_ydata()[0], 6) for line in noise[1].get_lines()] == [54.5, 52.0]
    curves = panels(report.figures["learning_curves.png"])
    assert [len(ax.get_lines()) for ax in curves] == [3, 3]
    bars = panels(report.figures["gains.png"])
    assert len(bars) == 1 and len(bars[0].patches) == 6
    assert len(panels(report.figures["asha.png"])) == 2


def test_asha_accounting(report):
    acct = report.tables["asha"].set_index("arch")
    assert acct.loc["all", ["epochs_spent", "epochs_if_all_ran"]].tolist() == [34, 44]
    assert acct.loc["resnet50", "saved_pct"] == pytest.approx(100 * 10 / 32)
    assert "ASHA ran 34 of the 44 epochs" in (report.out / "report.md").read_text()


def test_gaps_are_marked(report):
    text = (report.out / "report.md").read_text()
    assert "p4 (failed)" in text and "diverged (loss not finite)" in text
    assert "other run(s) in the experiment (other sweeps) were left out" in text


def test_repeats_give_means_intervals_and_paired_gains(repeated):
    """Known spreads (synthetic_sweep.repeat_specs): random 50/52/54, GHN + pp 56/57/58, GHN
    51/55/52 on seeds 1-3; t(0.975, 2) = 4.303."""
    s = repeated.sentences
    assert ("For resnet50, random init (lr=0.01, chosen by validation accuracy) reaches 52.0% "
            "± 2.0 test accuracy (mean ± std over 3 seeds; 95% interval 47.0–57.0%).") in s
    assert ("For resnet50, GHN + noise beta=3e-5 + orth (lr=0.012) beats random init by 5.0 "
            "points (95% interval +2.5 to +7.5, paired over 3 seeds).") in s
    assert ("For resnet50, GHN without post-processing (lr=0.01) is not distinguishable from "
            "random init (+0.7 points, 95% interval -5.6 to +6.9, paired over 3 seeds).") in s
    assert any(x.startswith("For convnext_base, GHN + noise beta=3e-5 + orth (lr=0.002) beats "
                            "random init by 2.0 points in the search's single runs") for x in s)
    comp = repeated.tables["comparison"].set_index(["arch", "method"])
    pp = comp.loc[("resnet50", "ghn+pp")]
    assert (pp["trial_id"], pp["n_seeds"], pp["gain_n"]) == ("p1", 3, 3)
    assert pp["test_mean"] == pytest.approx(0.57) and pp["test_std"] == pytest.approx(0.01)
    assert (pp["gain_lo"], pp["gain_hi"]) == pytest.approx((5 - 2.4841, 5 + 2.4841), abs=1e-3)
    text = (repeated.out / "report.md").read_text()
    assert "11 in the search, 9 repeats" in text and "## Repeats" in text
    row = "| resnet50 | GHN + post-processing | GHN + noise beta=3e-5 + orth | 0.012 | p1 |"
    assert row in text


def test_repeats_stay_out_of_the_search_plots_and_show_as_spread(repeated):
    heat = {ax.get_title(): points(ax) for ax in panels(repeated.figures["heatmaps.png"])}
    assert heat["resnet50 / ghn (6 trials)"] == 6  # the repeats are not extra trials here
    labels = [t.get_text() for ax in panels(repeated.figures["heatmaps.png"])
              for t in ax.texts]
    assert sorted(labels) == ["±1.0 (3)", "±2.0 (3)", "±2.1 (3)"]  # val std of r1/g1/p1 repeats
    (bars,) = panels(repeated.figures["gains.png"])
    errorbars = [c for c in bars.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars.patches) == 6 and len(errorbars) == 3  # resnet50's three methods
    assert sum(p.get_hatch() == "//" for p in bars.patches) == 3  # convnext: single runs
    noise = panels(repeated.figures["noise_vs_beta.png"])
    assert any(c.get_label() == "± std over repeats" for ax in noise for c in ax.containers)
    acct = repeated.tables["asha"].set_index("arch")
    assert acct.loc["all", "epochs_spent"] == 34  # ASHA's accounting: the search only


def test_an_accuracy_interval_is_cut_to_0_100_percent():
    import pandas as pd

    from analysis._sentences import accuracy_phrase

    row = pd.Series({"n_seeds": 2, "test_mean": 0.238, "test_std": 0.046, "test_lo": -0.175,
                     "test_hi": 1.2, "test_acc_at_best": 0.225})
    assert accuracy_phrase(row) == ("23.8% ± 4.6 test accuracy (mean ± std over 2 seeds; "
                                    "95% interval 0.0–100.0%)")
