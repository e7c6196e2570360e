"""The report's "Findings": the paper's questions answered in a few paragraphs, numbers included.

Which classes the GHN saw; GHN init against random init; how diverse the initial parameters are
and whether less diversity goes with smaller gains; what post-processing adds over plain GHN
init. Every comparison uses test accuracy at the best-validation epoch of the configuration
validation chose for each method, measured again on the repeat seeds and paired seed by seed
(`_stats.paired`, Student's t), so the test set chooses nothing. Where a sweep cannot answer (one
seed, no baseline, too few architectures) the paragraph says so instead of showing a number as if
it were evidence.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from contract import (
    GHN_ARCH_FAMILY_SEEN_PREFIX,
    GHN_ARCH_TOP1_PREFIX,
    GHN_CLASS_OVERLAP_TAG,
    GHN_CONFIG_TAG,
    GHN_KIND_TAG,
    GHN_KINDS,
    GHN_TRAIN_CLASSES_TAG,
    SWEEP_CLASSES_TAG,
    SWEEP_NUM_CLASSES_TAG,
    UNRECORDED,
)

from ._sentences import seeds_phrase
from ._stats import Estimate, estimate, paired
from ._summary import MEASURED

REPEAT_HINT = "run the sweep with --repeats 2 or more"
CANNOT = "the data cannot answer"
# The diversity measures shown, with how each reads: effective-rank ratio first, the one the
# relation to gains is measured on.
DIVERSITY = (("init_eff_rank_ratio", "effective-rank ratio", "higher is more diverse"),
             ("init_mean_abs_cos", "mean |cosine| between filters", "lower is more diverse"))
MIN_PAIRS = 3  # architecture-method pairs a rank correlation needs to say anything
LABELS = {"random": "random init", "ghn": "GHN init", "ghn+pp": "GHN + post-processing"}


def findings(comp: pd.DataFrame, df: pd.DataFrame, tags: dict[str, str]) -> list[str]:
    """The Findings paragraphs: classes (when recorded), then (a) GHN against random init,
    (b) diversity of the initial parameters, (c) what post-processing adds."""
    archs = sorted(comp["arch"].dropna().unique())
    if not archs:
        return ["No trial has a validation accuracy yet: there is nothing to find."]
    rows = {arch: comp[comp["arch"] == arch].set_index("method") for arch in archs}
    return [class_paragraph(tags), ghn_paragraph(rows, tags), diversity_paragraph(rows, df),
            postproc_paragraph(rows)]


def class_paragraph(tags: dict[str, str]) -> str:
    """Which classes the trials fine-tune on, and how many of them the GHN was trained on."""
    head = "**Classes.** " + ghn_sentence(tags)
    n = tags.get(SWEEP_NUM_CLASSES_TAG)
    if n is None:
        return head + ("This sweep's record does not say which classes its trials fine-tuned on "
                       "or which classes the GHN was trained on.")
    names = tags.get(SWEEP_CLASSES_TAG, "")
    shown = names if len(names) <= 200 else names[:200].rsplit(",", 1)[0] + ", ..."
    text = head + f"The trials fine-tune on {n} classes ({shown.replace(',', ', ')}); "
    trained = tags.get(GHN_TRAIN_CLASSES_TAG)
    overlap = tags.get(GHN_CLASS_OVERLAP_TAG)
    if trained is None:
        return text + "which classes the GHN was trained on was not recorded."
    if trained == UNRECORDED or overlap is None or not overlap.isdigit() or not n.isdigit():
        return text + ("the checkpoint does not record its training classes (the official "
                       "GHN-2 and GHN-3 checkpoints name none), so whether the GHN saw them "
                       "is unknown.")
    k = int(overlap)
    if k == 0:
        return text + ("the GHN was trained on none of these classes: the gains below are "
                       "transfer to classes it never saw.")
    if k == int(n):
        return text + (f"the GHN was trained on all of these {n} classes: the gains below are "
                       "not transfer to unseen classes.")
    return text + (f"the GHN was trained on {k} of these {n} classes: the gains below mix "
                   "classes it saw with classes it did not.")


def ghn_sentence(tags: dict[str, str]) -> str:
    """Which kind of GHN predicted the parameters, and its size, where the sweep recorded it:
    a GHN-2's and a GHN-3's gains are different findings."""
    kind = tags.get(GHN_KIND_TAG)
    if kind is None:
        return ""
    config = tags.get(GHN_CONFIG_TAG)
    detail = f" ({config.replace(',', ', ')})" if config else ""
    return f"The GHN is a {GHN_KINDS.get(kind, kind)}{detail}. "


def _row(rows: pd.DataFrame, method: str) -> pd.Series | None:
    return rows.loc[method] if method in rows.index else None


def compare(what: str, other: str, a: pd.Series | None, b: pd.Series | None) -> str:
    """``what`` against ``other`` in test accuracy, paired over the repeat seeds both chosen
    configurations have; in words only where there are fewer than two pairs."""
    if a is None or b is None:
        return f"the sweep has no {other if b is None else what} trial with an accuracy: {CANNOT}"
    d = paired(a["seed_acc"], b["seed_acc"])
    if d.n >= 2:
        interval = (f"95% interval {100 * d.lo:+.1f} to {100 * d.hi:+.1f}, paired over "
                    f"{seeds_phrase(d.n)}")
        if d.excludes_zero:
            side = "beats" if d.mean > 0 else "trails"
            return f"{what} {side} {other} by {abs(100 * d.mean):.1f} points ({interval})"
        return (f"{what} is not distinguishable from {other} ({100 * d.mean:+.1f} points, "
                f"{interval})")
    if d.n == 1:
        return (f"{what} differs from {other} by {100 * d.mean:+.1f} points on 1 paired seed, "
                f"no interval: {CANNOT}")
    if pd.notna(a["test_acc_at_best"]) and pd.notna(b["test_acc_at_best"]):
        delta = 100 * (a["test_acc_at_best"] - b["test_acc_at_best"])
        return (f"{what} differs from {other} by {delta:+.1f} points in the search's single "
                f"runs (one seed each, no interval): {CANNOT}")
    return f"{what} and {other} have no test accuracy to compare: {CANNOT}"


def _hint(sentences: list[str]) -> str:
    """What would answer where one seed per method could not."""
    few = any(w in s for s in sentences for w in ("single runs", "1 paired seed"))
    return f" Where one seed could not answer, {REPEAT_HINT}." if few else ""


def distance_phrase(arch: str, tags: dict[str, str]) -> str:
    """How far ``arch`` is from the GHN's training architectures, where the sweep measured it
    (a GHN trained here): a gain on a far architecture is the harder transfer."""
    seen = tags.get(GHN_ARCH_FAMILY_SEEN_PREFIX + arch)
    if seen is None:
        return ""
    family = "a family the GHN trained on" if seen == "true" else "a family new to the GHN"
    top1 = tags.get(GHN_ARCH_TOP1_PREFIX + arch)
    n = tags.get(GHN_TRAIN_CLASSES_TAG, "").count(",") + 1
    own = (f"; the GHN's predicted parameters, without fine-tuning, reach "
           f"{100 * float(top1):.1f}% on its own {n} classes, chance {100 / n:.1f}%"
           if top1 else "")
    return f" ({family}{own})"


def ghn_paragraph(rows: dict[str, pd.DataFrame], tags: dict[str, str] | None = None) -> str:
    """(a) GHN init, without and with post-processing, against random init, per architecture,
    with each architecture's distance from the GHN's training architectures where known."""
    tags = tags or {}
    parts = []
    for arch, r in rows.items():
        if _row(r, "random") is None:
            parts.append(f"For {arch}, the sweep has no random-init trial with an accuracy: "
                         f"no baseline, {CANNOT}.")
            continue
        plain = compare("GHN init", "random init", _row(r, "ghn"), _row(r, "random"))
        pp = compare("GHN + post-processing", "random init", _row(r, "ghn+pp"),
                     _row(r, "random"))
        parts.append(f"For {arch}{distance_phrase(arch, tags)}, {plain}; {pp}.")
    return ("**GHN init against random init.** Test accuracy at the best-validation epoch of "
            "the configuration validation chose for each method, measured again on the repeat "
            "seeds and paired seed by seed (95% Student's t interval). " + " ".join(parts)
            + _hint(parts) + (" " + scope_sentence(tags) if any("95% interval" in p
                                                                 for p in parts) else ""))


def scope_sentence(tags: dict[str, str]) -> str:
    """What the intervals do not cover: the GHN is one draw. A GHN the sweep trained (it
    measured the GHN's distance to the architectures) can be trained again with another seed;
    two GHNs trained with the same settings on two CPU types gave post-processing gains 5 points
    apart, outside both intervals (docs/results.md)."""
    text = ("These intervals cover the fine-tuning seeds of this one GHN, not the GHN's own "
            "training")
    trained_here = any(k.startswith((GHN_ARCH_TOP1_PREFIX, GHN_ARCH_FAMILY_SEEN_PREFIX))
                       for k in tags)
    if trained_here:
        return text + (": another GHN trained with the same settings gives other gains; to "
                       "measure how much, run the sweep once per --ghn-train-seed.")
    return text + "."


def postproc_paragraph(rows: dict[str, pd.DataFrame]) -> str:
    """(c) What post-processing adds over plain GHN init, per architecture."""
    parts = [f"For {arch}, " + compare("GHN + post-processing", "plain GHN init",
                                       _row(r, "ghn+pp"), _row(r, "ghn")) + "."
             for arch, r in rows.items()]
    return ("**What post-processing adds.** The post-processed GHN configuration validation "
            "chose (noise strength, orthogonalisation) against GHN init without "
            "post-processing, paired by seed. " + " ".join(parts) + _hint(parts))


def diversity_of(df: pd.DataFrame, row: pd.Series | None, column: str) -> Estimate:
    """``column`` over the seeds of a chosen configuration: its repeats', else its own run."""
    if row is None:
        return estimate([])
    reps = df[(df["repeat_of"] == row["trial_id"]) & df["status"].isin(MEASURED)]
    values = reps[column] if not reps.empty else df.loc[df["trial_id"] == row["trial_id"],
                                                        column]
    return estimate(float(v) for v in values.dropna())


def _spread(e: Estimate, digits: int) -> str:
    if e.n == 0:
        return "not logged"
    if e.n == 1:
        return f"{e.mean:.{digits}f}"
    return f"{e.mean:.{digits}f} ± {e.std:.{digits}f}"


def _arch_diversity(arch: str, r: pd.DataFrame, df: pd.DataFrame) -> str:
    """One architecture's diagnostics per method: mean ± std over its seeds."""
    (rank, _, _), (cos, _, _) = DIVERSITY
    shown, seeds = [], []
    for m in ("random", "ghn", "ghn+pp"):
        if m in r.index:
            e_rank, e_cos = diversity_of(df, r.loc[m], rank), diversity_of(df, r.loc[m], cos)
            shown.append(f"{LABELS[m]} {_spread(e_rank, 2)} and {_spread(e_cos, 3)} "
                         f"({seeds_phrase(e_rank.n)})")
            seeds.append(e_rank.n)
    text = f"For {arch}: {'; '.join(shown)}."
    if seeds and max(seeds) < 2:
        text += (" One seed each: there is no spread over seeds to set the differences "
                 f"against, so {CANNOT} whether they exceed seed noise.")
    return text


def diversity_paragraph(rows: dict[str, pd.DataFrame], df: pd.DataFrame) -> str:
    """(b) The init diagnostics of random, GHN and post-processed GHN init, then whether less
    diverse predicted parameters go with smaller gains over random init."""
    (_, rank_name, rank_reading), (_, cos_name, cos_reading) = DIVERSITY
    parts = [_arch_diversity(arch, r, df) for arch, r in rows.items()]
    return (f"**Diversity of the initial parameters.** The {rank_name} of the initial weights "
            f"({rank_reading}) and the {cos_name} ({cos_reading}), mean ± std over the seeds "
            "of each method's chosen configuration (its repeats, else its one search run). "
            + " ".join(parts) + " " + relation_sentence(rows, df))


def gain_pairs(rows: dict[str, pd.DataFrame], df: pd.DataFrame) -> list[tuple[str, str, float,
                                                                                float]]:
    """``(arch, method, diversity, gain in points)`` of each GHN method whose gain over random
    init is paired over 2 or more seeds: the mean effective-rank ratio over its seeds."""
    out = []
    for arch, r in rows.items():
        b = _row(r, "random")
        for method in ("ghn", "ghn+pp"):
            a = _row(r, method)
            if a is None or b is None:
                continue
            gain, div = paired(a["seed_acc"], b["seed_acc"]), diversity_of(df, a, DIVERSITY[0][0])
            if gain.n >= 2 and div.n:
                out.append((arch, method, div.mean, 100 * gain.mean))
    return out


def _within(pairs: list[tuple[str, str, float, float]]) -> list[str]:
    """Per architecture with both GHN methods measured: which is less diverse, and its gain."""
    out = []
    for arch in dict.fromkeys(p[0] for p in pairs):
        mine = sorted((p for p in pairs if p[0] == arch), key=lambda p: p[2])
        if len(mine) < 2 or mine[0][2] == mine[-1][2]:
            continue
        low, high = mine[0], mine[-1]
        size = "smaller" if low[3] < high[3] else "larger"
        out.append(f"Within {arch}, the less diverse GHN init ({LABELS[low[1]]}: {low[2]:.2f}, "
                   f"against {LABELS[high[1]]}: {high[2]:.2f}) has the {size} gain over random "
                   "init "
                   f"({low[3]:+.1f} against {high[3]:+.1f} points; one comparison, not a "
                   "trend).")
    return out


def relation_sentence(rows: dict[str, pd.DataFrame], df: pd.DataFrame) -> str:
    """Whether the architecture-method pairs whose initial parameters are less diverse gain less
    over random init: Spearman's rank correlation across the pairs with a paired gain."""
    pairs = gain_pairs(rows, df)
    within = " ".join(_within(pairs))
    lead = (within + " ") if within else ""
    one_arch = (" With one architecture, nothing can be said across architectures."
                if len(rows) == 1 else "")
    if len(pairs) < MIN_PAIRS:
        return (lead + f"Whether lower diversity goes with smaller gains across the sweep: "
                f"{CANNOT}; it needs a gain over random init paired over 2 or more seeds for at "
                f"least {MIN_PAIRS} architecture-method pairs, and this sweep has {len(pairs)}."
                + one_arch)
    rho, p = stats.spearmanr([q[2] for q in pairs], [q[3] for q in pairs])
    where = f"across {len(pairs)} architecture-method pairs"
    if not math.isfinite(rho):
        return lead + f"Diversity or gain is the same {where}: no relation can be measured."
    shown_p = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
    numbers = (f"Spearman's rho = {rho:+.2f} between {DIVERSITY[0][1]} and gain over random "
               f"init, {shown_p}, {where}")
    if p < 0.05:
        return lead + (f"Lower diversity goes with {'smaller' if rho > 0 else 'larger'} gains "
                       f"over random init ({numbers}).")
    return lead + (f"Lower diversity does not distinguishably go with smaller gains ({numbers})."
                   + one_arch)
