"""report.md's Findings: each paragraph with its numbers, and "cannot answer" where the data
cannot (the numbers are worked out by hand in synthetic_sweep.py's docstrings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import read_ray_results, trials_table
from analysis._findings import class_paragraph, findings
from analysis._summary import comparison, frame
from contract import (
    GHN_CLASS_OVERLAP_TAG,
    GHN_TRAIN_CLASSES_TAG,
    SWEEP_CLASSES_TAG,
    SWEEP_NUM_CLASSES_TAG,
    SWEEP_RECORD_FILE,
    UNRECORDED,
)


def _paragraphs(report) -> dict[str, str]:
    """The Findings paragraphs by their bold lead ("GHN init against random init", ...)."""
    return {p.split("**")[1].rstrip("."): p for p in report.findings}


def test_findings_are_a_section_of_report_md(repeated):
    text = (repeated.out / "report.md").read_text()
    section = text.split("## Findings\n", 1)[1].split("\n## ", 1)[0]
    assert all(p in section for p in repeated.findings) and len(repeated.findings) == 4


def test_ghn_against_random_init_paired_over_the_repeat_seeds(repeated):
    text = _paragraphs(repeated)["GHN init against random init"]
    assert ("For resnet50, GHN init is not distinguishable from random init (+0.7 points, 95% "
            "interval -5.6 to +6.9, paired over 3 seeds); GHN + post-processing beats random "
            "init by 5.0 points (95% interval +2.5 to +7.5, paired over 3 seeds).") in text
    # convnext_base has no repeats: its single runs are said to answer nothing
    assert ("For convnext_base, GHN init differs from random init by +1.0 points in the "
            "search's single runs (one seed each, no interval): the data cannot answer") in text
    assert "--repeats 2 or more" in text


def test_diversity_per_method_with_its_spread_over_seeds(repeated):
    text = _paragraphs(repeated)["Diversity of the initial parameters"]
    assert ("For resnet50: random init 0.91 ± 0.01 and 0.050 ± 0.000 (3 seeds); GHN init "
            "0.40 ± 0.00 and 0.300 ± 0.000 (3 seeds); GHN + post-processing 0.62 ± 0.02 and "
            "0.210 ± 0.010 (3 seeds).") in text
    assert ("Within resnet50, the less diverse GHN init (GHN init: 0.40, against GHN + "
            "post-processing: 0.62) has the smaller gain over random init (+0.7 against +5.0 "
            "points; one comparison, not a trend).") in text
    assert ("Whether lower diversity goes with smaller gains across the sweep: the data cannot "
            "answer") in text and "this sweep has 2." in text


def test_what_post_processing_adds_paired_over_the_repeat_seeds(repeated):
    text = _paragraphs(repeated)["What post-processing adds"]
    assert ("For resnet50, GHN + post-processing is not distinguishable from plain GHN init "
            "(+4.3 points, 95% interval -0.8 to +9.5, paired over 3 seeds).") in text
    assert ("For convnext_base, GHN + post-processing differs from plain GHN init by +1.0 "
            "points in the search's single runs") in text


def test_a_single_seed_sweep_says_it_cannot_answer(report):
    found = _paragraphs(report)
    ghn = found["GHN init against random init"]
    assert ("For resnet50, GHN init differs from random init by +2.5 points in the search's "
            "single runs (one seed each, no interval): the data cannot answer") in ghn
    assert "paired over" not in ghn and "beats" not in ghn
    assert "These intervals cover" not in ghn  # it has none
    diversity = found["Diversity of the initial parameters"]
    assert "One seed each: there is no spread over seeds" in diversity
    assert "this sweep has 0." in diversity
    assert "+1.6 points in the search's single runs" in found["What post-processing adds"]
    assert all("the data cannot answer" in p for k, p in found.items() if k != "Classes")


def test_the_class_overlap_is_said_in_words(report):
    text = (report.out / "report.md").read_text()
    assert ("**Classes.** The trials fine-tune on 5 classes (bird, cat, frog, ship, truck); the "
            "GHN was trained on 3 of these 5 classes") in text


@pytest.mark.parametrize("tags, words", [
    ({SWEEP_NUM_CLASSES_TAG: "5", GHN_TRAIN_CLASSES_TAG: "a,b", GHN_CLASS_OVERLAP_TAG: "0"},
     "the GHN was trained on none of these classes"),
    ({SWEEP_NUM_CLASSES_TAG: "5", GHN_TRAIN_CLASSES_TAG: "a,b", GHN_CLASS_OVERLAP_TAG: "5"},
     "the GHN was trained on all of these 5 classes"),
    ({SWEEP_NUM_CLASSES_TAG: "10", GHN_TRAIN_CLASSES_TAG: UNRECORDED},
     "the checkpoint does not record its training classes"),
    ({SWEEP_NUM_CLASSES_TAG: "10"}, "which classes the GHN was trained on was not recorded"),
    ({}, "does not say which classes its trials fine-tuned on"),
])
def test_class_paragraph_wording(tags, words):
    assert words in class_paragraph({SWEEP_CLASSES_TAG: "a,b,c", **tags})


def test_ray_results_carry_the_class_record(synthetic, tmp_path):
    sweep_dir = synthetic.write_ray_results(tmp_path, synthetic.specs()[:3])
    (sweep_dir / SWEEP_RECORD_FILE).write_text(json.dumps({"sweep_id": "x", "tags": {
        SWEEP_CLASSES_TAG: "cat,dog", SWEEP_NUM_CLASSES_TAG: "2",
        GHN_TRAIN_CLASSES_TAG: UNRECORDED}}))
    sweep = read_ray_results(sweep_dir)
    assert "the checkpoint does not record" in class_paragraph(sweep.tags)


def _three_archs(synthetic, reverse: bool) -> list:
    """Three architectures, each with random, GHN and GHN + pp chosen and repeated on seeds 1-2.
    Gains over random: GHN +1, +2, +3 points, GHN + pp +4, +5, +6; effective-rank ratio rising
    with the gain (or, ``reverse``, falling)."""
    out = []
    for i, arch in enumerate(("a0", "a1", "a2")):
        for method, gain, rank in (("random", 0, .9), ("ghn", i + 1, .30 + .05 * i),
                                   ("ghn+pp", i + 4, .60 + .05 * i)):
            rank = 1.2 - rank if reverse and method != "random" else rank
            init = "random" if method == "random" else "ghn"
            beta = 3e-5 if method == "ghn+pp" else 0.0
            tid = f"{arch}{method}"
            for seed in (0, 1, 2):
                test = .50 + .01 * seed + gain / 100
                out.append(synthetic.TrialSpec(
                    tid if seed == 0 else f"{tid}s{seed}", arch, init, 0.01,
                    [.3, .4, .45, test + .05], [.3, .4, .45, test], beta=beta, seed=seed,
                    repeat_of=None if seed == 0 else tid,
                    diag={**synthetic.INIT_DIAG, "init/eff_rank_ratio": rank}))
    return out


@pytest.mark.parametrize("reverse, verdict", [(False, "smaller"), (True, "larger")])
def test_diversity_against_gain_across_architecture_method_pairs(synthetic, tmp_path, reverse,
                                                                 verdict):
    sweep = read_ray_results(synthetic.write_ray_results(tmp_path,
                                                         _three_archs(synthetic, reverse)))
    df = frame(trials_table(sweep))
    text = findings(comparison(df), df, sweep.tags)[2]
    rho = "-1.00" if reverse else "+1.00"
    assert (f"Lower diversity goes with {verdict} gains over random init (Spearman's rho = "
            f"{rho} between effective-rank ratio and gain over random init, p < 0.001, across "
            "6 architecture-method pairs).") in text


def test_one_architecture_cannot_speak_across_architectures(synthetic, tmp_path):
    specs = [s for s in _three_archs(synthetic, False) if s.arch == "a0"]
    sweep = read_ray_results(synthetic.write_ray_results(Path(tmp_path), specs))
    df = frame(trials_table(sweep))
    text = findings(comparison(df), df, sweep.tags)[2]
    assert "With one architecture, nothing can be said across architectures." in text


def test_each_architectures_distance_from_the_ghns_is_said_where_it_was_measured():
    from analysis._findings import distance_phrase
    from contract import GHN_ARCH_FAMILY_SEEN_PREFIX, GHN_ARCH_TOP1_PREFIX, GHN_TRAIN_CLASSES_TAG

    tags = {GHN_ARCH_FAMILY_SEEN_PREFIX + "convnext_tiny": "false",
            GHN_ARCH_TOP1_PREFIX + "convnext_tiny": "0.1760",
            GHN_ARCH_FAMILY_SEEN_PREFIX + "resnet18": "true",
            GHN_TRAIN_CLASSES_TAG: "airplane,automobile,bird,cat,deer"}
    far = distance_phrase("convnext_tiny", tags)
    assert "a family new to the GHN" in far and "17.6% on its own 5 classes, chance 20.0%" in far
    assert distance_phrase("resnet18", tags) == " (a family the GHN trained on)"
    assert distance_phrase("vgg11", tags) == ""


def test_the_intervals_are_said_to_cover_one_ghn_and_a_trained_ghn_points_to_its_seed():
    from analysis._findings import scope_sentence
    from contract import GHN_ARCH_TOP1_PREFIX

    official = scope_sentence({GHN_TRAIN_CLASSES_TAG: UNRECORDED})
    assert official == ("These intervals cover the fine-tuning seeds of this one GHN, not the "
                        "GHN's own training.")
    trained = scope_sentence({GHN_ARCH_TOP1_PREFIX + "resnet18": "0.34"})
    assert trained.startswith(official[:-1] + ": another GHN trained with the same settings")
    assert "--ghn-train-seed" in trained and "--ghn-train-seed" not in official


def test_the_ghn_paragraph_ends_with_what_its_intervals_cover(repeated):
    text = _paragraphs(repeated)["GHN init against random init"]
    assert text.endswith("not the GHN's own training.")
