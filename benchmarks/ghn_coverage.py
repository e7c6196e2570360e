"""Which torchvision classification models GHN-2 and GHN-3 predict parameters for.

Claim: GHN-2 predicts at least 95% of `torchvision.models.list_models(module=torchvision.models)`
and GHN-3 all of them, each at its default constructor arguments and 224x224 (Inception-v3 at
299), with finite values; a failure names the model and the reason. For GHN-3 each model is
also compared with GHN-3's own recorded outcome (reference/torchvision_survey.json, same seeds):
the number of predicted and unpredicted tensors and the total parameter norm (`survey=match`
when the counts agree and the norm is within 1e-4 relative). Prints one line per model and GHN
(time, graph size, parameters predicted and not), then, last, `<ghn> predicted N/M models`.
Takes a few minutes for all models; `--models` picks a subset, `--which` one GHN.

    python benchmarks/ghn_coverage.py [--ghn PATH_OR_NAME] [--ghn3 PATH_OR_NAME]
                                      [--which ghn2,ghn3] [--models a,b,c]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path

import torch
import torchvision

from ghn import load_ghn, predict_parameters

SHARED = Path(os.environ.get("GHN_SWEEP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REFERENCE_DIR = Path(os.environ.get("GHN2_REFERENCE_DIR", SHARED / "ghn2" / "reference"))
GHN3_REFERENCE_DIR = Path(os.environ.get("GHN3_REFERENCE_DIR", SHARED / "ghn3" / "reference"))
DEFAULT_GHN = REFERENCE_DIR / "ghn2_random_imagenet_seed0.pt"
DEFAULT_GHN3 = GHN3_REFERENCE_DIR / "ghn3tm8_random_seed0.pt"
SURVEY = GHN3_REFERENCE_DIR / "torchvision_survey.json"


def _build(name: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, **kwargs)


def check(name: str, ghn, survey: dict | None) -> tuple[bool, str]:
    kwargs = survey["kwargs"] if survey else {}
    model = _build(name, kwargs)
    torch.manual_seed(1)  # GHN-3 draws its tracing batch first; ViT's class-token row next
    torch.randn(2, 3, 299, 299) if name == "inception_v3" else torch.randn(2, 3, 224, 224)
    start = time.perf_counter()
    pred = predict_parameters(model, ghn)
    seconds = time.perf_counter() - start
    params = dict(model.named_parameters())
    bad = [n for n in pred.predicted if not torch.isfinite(params[n]).all()]
    if bad:
        return False, f"non-finite predictions in {bad[:3]}"
    share = sum(params[n].numel() for n in pred.predicted) / sum(p.numel() for p in params.values())
    detail = (f"{seconds:.2f}s nodes={pred.graph.n_nodes} predicted={len(pred.predicted)} "
              f"not_predicted={len(pred.not_predicted)} values_predicted={share:.1%}")
    if survey:
        norm = math.sqrt(sum(float(p.detach().double().norm()) ** 2 for p in params.values()))
        same = (len(pred.predicted) == survey["n_pred_tensors"]
                and len(pred.not_predicted) == survey["n_unpred_tensors"]
                and math.isclose(norm, survey["total_norm"], rel_tol=1e-4))
        detail += (f" survey={'match' if same else 'DIFF'} norm={norm:.4f}/"
                   f"{survey['total_norm']:.4f} ghn3_s={survey['ghn3_s']}")
    return True, detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ghn", default=str(DEFAULT_GHN), help="GHN-2 checkpoint name or path")
    parser.add_argument("--ghn3", default=str(DEFAULT_GHN3), help="GHN-3 checkpoint name or path")
    parser.add_argument("--which", default="ghn2,ghn3", help="comma-separated: ghn2, ghn3")
    parser.add_argument("--models", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # torchvision's init notices
    survey = {}
    if SURVEY.is_file():
        survey = {r["model"]: r for r in json.loads(SURVEY.read_text())["results"]}
    names = args.models.split(",") if args.models else sorted(
        torchvision.models.list_models(module=torchvision.models))
    for which in args.which.split(","):
        ghn = load_ghn(args.ghn if which == "ghn2" else args.ghn3)
        ok = 0
        for name in names:
            try:
                success, detail = check(name, ghn, survey.get(name) if which == "ghn3" else None)
            except Exception as e:  # noqa: BLE001 - report every failure and go on
                success, detail = False, f"{type(e).__name__}: {e}"
            ok += success
            print(f"{which} {name:28s} {'ok  ' if success else 'FAIL'} {detail}", flush=True)
        print(f"{which} predicted {ok}/{len(names)} models", flush=True)


if __name__ == "__main__":
    main()
