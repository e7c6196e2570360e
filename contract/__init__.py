"""What the trainable, the sweep and the analysis agree on, declared once.

The trainable reports metrics under these names; the sweep's tracking callback writes them, and
the tags below, to MLflow; the analysis reads them back from MLflow or from Ray Tune's results.
How a trial ended is decided by one function, `classify`, from what every side can see: whether
Tune recorded an error, whether a report said the loss diverged, the epochs run against those
planned, whether Tune ended the trial, and whether the sweep still runs. The best trial is chosen
by one rule, `rank_key`. Standard library only, so that any side imports it without Ray, torch or
MLflow.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = [
    "CONFIG_KEY",
    "DIVERGED_TAG",
    "EPOCH_METRICS",
    "ERROR_FILE_TAG",
    "EXPERIMENT_KIND",
    "GHN_ARCH_FAMILY_SEEN_PREFIX",
    "GHN_ARCH_TOP1_PREFIX",
    "GHN_CLASS_OVERLAP_TAG",
    "GHN_CONFIG_TAG",
    "GHN_KINDS",
    "GHN_KIND_TAG",
    "GHN_TRAIN_CLASSES_TAG",
    "INIT_PREFIX",
    "INTERRUPTED_TAG",
    "METRIC",
    "MODE",
    "PARENT_TAG",
    "PHASE_TAG",
    "PROVENANCE_PREFIXES",
    "REPEAT_OF",
    "REPEAT_OF_TAG",
    "REPORTED_METRICS",
    "RETRIED_TAG",
    "STOPPED_EARLY_TAG",
    "SWEEP_CLASSES_TAG",
    "SWEEP_ID_TAG",
    "SWEEP_NUM_CLASSES_TAG",
    "SWEEP_RECORD_FILE",
    "SWEEP_TAG",
    "TAGS_KEY",
    "TRIAL_ID_TAG",
    "TRIAL_NAME_TAG",
    "TrialStatus",
    "UNRECORDED",
    "best_of",
    "classify",
    "method_of",
    "rank_key",
    "run_status",
    "status_of_run",
]

# --- metrics: what a trial reports each epoch (step = epoch, 1-based) -------------------------
EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "lr",
                 "epoch_time_s", "images_per_s", "diverged")
# Every report also carries its epoch and the seconds spent compiling (0 when not compiled);
# "test/acc" only on the epochs the trial's test evaluation selects.
REPORTED_METRICS = ("epoch", *EPOCH_METRICS, "compile_time_s")
# Diagnostics of the initial parameters (init/mean_abs_cos, ...), reported once: step 0.
INIT_PREFIX = "init/"
# The first report of a fresh trial: its string tags, and its resolved flat config.
TAGS_KEY = "trial_tags"
CONFIG_KEY = "trial_config"
# A repeat's config key: the id of the search trial whose configuration it runs again.
REPEAT_OF = "repeat.of"

# --- the best trial: validation chooses, the highest wins --------------------------------------
METRIC, MODE = "val/acc", "max"

# --- MLflow: the sweep's parent run and its trials' child runs ---------------------------------
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "ghn_sweep.sweep"
SWEEP_ID_TAG = "ghn_sweep.sweep_id"
TRIAL_ID_TAG = "ray.trial_id"
TRIAL_NAME_TAG = "ray.trial_name"
STOPPED_EARLY_TAG = "ghn_sweep.stopped_early"
DIVERGED_TAG = "ghn_sweep.diverged"
INTERRUPTED_TAG = "ghn_sweep.interrupted"  # on the parent and open runs of a stopped sweep
REPEAT_OF_TAG = "ghn_sweep.repeat_of"
PHASE_TAG = "ghn_sweep.phase"
ERROR_FILE_TAG = "ghn_sweep.error_file"
RETRIED_TAG = "ghn_sweep.retried"
# Which classes the trials fine-tune on, against those the GHN was trained on: tags of the parent
# run, so a gain can be read as transfer to unseen classes or not. Names are comma-separated.
SWEEP_CLASSES_TAG = "ghn_sweep.classes"  # the classes every trial fine-tunes on
SWEEP_NUM_CLASSES_TAG = "ghn_sweep.num_classes"  # how many (the names may be shortened)
GHN_TRAIN_CLASSES_TAG = "ghn.train_classes"  # the checkpoint's own record, or UNRECORDED
GHN_CLASS_OVERLAP_TAG = "ghn.class_overlap"  # how many of the sweep's classes the GHN saw
UNRECORDED = "unrecorded"  # an official checkpoint names no training classes
# How far each fine-tuned architecture is from those a GHN trained here learned on, per
# architecture (the tag name ends in the torchvision name): the GHN's top-1 on its own classes'
# test images with its predicted parameters and no fine-tuning (chance is 1/classes; near
# chance: far), and whether the architecture's family was among the GHN's training families.
GHN_ARCH_TOP1_PREFIX = "ghn.arch_top1."
GHN_ARCH_FAMILY_SEEN_PREFIX = "ghn.arch_family_seen."
# Which GHN predicted the parameters: on the parent run (and each GHN-init trial), so a result
# says whether it came from a GHN-2 or a GHN-3, and of what size.
GHN_KIND_TAG = "ghn.kind"  # ghn2 | ghn3
GHN_CONFIG_TAG = "ghn.config"  # e.g. hid=64,heads=8,layers=3,max_shape=64x64x16x16,classes=1000
GHN_KINDS = {"ghn2": "GHN-2", "ghn3": "GHN-3"}  # tag value -> how the report names it
# In the sweep's Ray results directory: its id, its configuration and the class tags above, so
# a report from Ray's results alone says them too.
SWEEP_RECORD_FILE = "ghn_sweep.json"
# Tags that say which code, packages and machine produced a run.
PROVENANCE_PREFIXES = ("code.", "version.", "device.")


class TrialStatus(enum.StrEnum):
    """How a trial ended, as the progress line, MLflow, the results tables and the report name it.

    A ``str``: the tables store the value, and it compares equal to it.
    """

    FINISHED = "finished"  # ran every planned epoch
    STOPPED_EARLY = "stopped_early"  # Tune (ASHA) ended it before its last epoch
    DIVERGED = "diverged"  # its training loss stopped being finite
    FAILED = "failed"  # Tune recorded an error (after its retries)
    RUNNING = "running"  # not ended, and the sweep still runs
    INTERRUPTED = "interrupted"  # not ended, and the sweep was cut off: --resume continues it

    def __hash__(self) -> int:  # as its value's: a dict keyed by the value finds the member
        return str.__hash__(self)

    @property
    def label(self) -> str:
        """The words for people: ``stopped early``."""
        return self.value.replace("_", " ")


def classify(*, errored: bool = False, diverged: bool = False, epochs_run: int = 0,
             epochs_planned: int | None = None, ended: bool = False,
             live: bool = True) -> TrialStatus:
    """How a trial ended, from what both the sweep and the analysis know of it.

    ``errored``: Tune recorded an error. ``diverged``: a report said so. ``epochs_run`` of
    ``epochs_planned`` (None: not known, so the trial cannot be called finished by its epochs).
    ``ended``: Tune ended the trial (its last result is ``done``, or it completed), which short
    of its last epoch means the scheduler stopped it. ``live``: the sweep still runs, so a trial
    that has not ended is running rather than interrupted. An error outranks divergence, which
    outranks the epoch count.
    """
    if errored:
        return TrialStatus.FAILED
    if diverged:
        return TrialStatus.DIVERGED
    if epochs_planned is not None and epochs_run >= epochs_planned:
        return TrialStatus.FINISHED
    if ended:
        return TrialStatus.STOPPED_EARLY
    return TrialStatus.RUNNING if live else TrialStatus.INTERRUPTED


_RUN_STATUS = {TrialStatus.FINISHED: "FINISHED", TrialStatus.DIVERGED: "FINISHED",
               TrialStatus.STOPPED_EARLY: "KILLED", TrialStatus.FAILED: "FAILED",
               TrialStatus.INTERRUPTED: "KILLED", TrialStatus.RUNNING: "RUNNING"}


def run_status(status: TrialStatus) -> str:
    """The MLflow run status a trial's run closes with (its tags tell the KILLED ones apart)."""
    return _RUN_STATUS[status]


def status_of_run(mlflow_status: str, tags: dict[str, str], diverged: bool = False) -> TrialStatus:
    """A trial's status read back from its MLflow run: the inverse of what the tracking wrote
    (`run_status` and the ``ghn_sweep.*`` tags). ``diverged``: its ``diverged`` metric says so."""
    return classify(errored=mlflow_status == "FAILED",
                    diverged=diverged or tags.get(DIVERGED_TAG) == "true",
                    # the tracking closes a run FINISHED once its trial ran every epoch
                    epochs_run=int(mlflow_status == "FINISHED"), epochs_planned=1,
                    ended=STOPPED_EARLY_TAG in tags, live=mlflow_status in ("RUNNING", "SCHEDULED"))


def method_of(init: str | None, beta: float | None, orth: bool | None) -> str:
    """A trial's method, the name the sweep groups and the report compares by: random |
    ghn (predicted parameters as they are) | ghn+pp (noise and/or orth) | pretrained."""
    if init != "ghn":
        return init or "unknown"
    return "ghn+pp" if (beta or 0) > 0 or orth else "ghn"


def rank_key(status: str, best_val: float | None, trial_id: str) -> tuple | None:
    """Sort key, smallest first, of a trial that may be best; None for one that never is.

    1. diverged and failed trials, and trials without a finite best ``val/acc``, are never best;
    2. a trial run to its last epoch beats any that did not (stopped early, running,
       interrupted): its number is final and was not chosen at a lucky early epoch;
    3. then the higher best ``val/acc`` over the trial's epochs (validation chooses, never test);
    4. ties go to the smaller trial id (Tune numbers a sweep's trials in order: the earlier one).
    """
    if status in (TrialStatus.DIVERGED, TrialStatus.FAILED) or best_val is None \
            or not math.isfinite(best_val):
        return None
    return (status != TrialStatus.FINISHED, -float(best_val), str(trial_id))


T = TypeVar("T")


def best_of(items: Iterable[T], key: Callable[[T], tuple | None]) -> T | None:
    """The item whose `rank_key` (computed by ``key``) is smallest; None when none may be best."""
    ranked = [(k, i, item) for i, item in enumerate(items) if (k := key(item)) is not None]
    return min(ranked)[2] if ranked else None
