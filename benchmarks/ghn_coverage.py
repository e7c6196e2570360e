"""Which torchvision classification models GHN-2 predicts parameters for.

Claim: at least 95% of `torchvision.models.list_models(module=torchvision.models)`, each at its
default constructor arguments and 224x224 (Inception-v3 at 299), gets every graph node predicted
with finite values; a failure names the model and the reason. Prints one line per model (time
of the prediction, graph size, parameters predicted and not), then, last, `predicted N/M models`.
Takes a few minutes: building the largest models (ViT-H, RegNet-Y-128GF) dominates.

    python benchmarks/ghn_coverage.py [--ghn PATH_OR_NAME] [--models a,b,c]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import torch
import torchvision

from ghn import load_ghn, predict_parameters

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE_DIR = Path(os.environ.get("GHN2_REFERENCE_DIR", SHARED / "ghn2" / "reference"))
DEFAULT_GHN = REFERENCE_DIR / "ghn2_random_imagenet_seed0.pt"


def check(name: str, ghn) -> tuple[bool, str]:
    model = torchvision.models.get_model(name)
    start = time.perf_counter()
    pred = predict_parameters(model, ghn)
    seconds = time.perf_counter() - start
    params = dict(model.named_parameters())
    bad = [n for n in pred.predicted if not torch.isfinite(params[n]).all()]
    if bad:
        return False, f"non-finite predictions in {bad[:3]}"
    share = sum(params[n].numel() for n in pred.predicted) / sum(p.numel() for p in params.values())
    return True, (f"{seconds:.2f}s nodes={pred.graph.n_nodes} predicted={len(pred.predicted)} "
                  f"not_predicted={len(pred.not_predicted)} values_predicted={share:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ghn", default=str(DEFAULT_GHN), help="GHN-2 checkpoint name or path")
    parser.add_argument("--models", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # torchvision's init notices
    ghn = load_ghn(args.ghn)
    names = args.models.split(",") if args.models else sorted(
        torchvision.models.list_models(module=torchvision.models))
    ok = 0
    for name in names:
        try:
            success, detail = check(name, ghn)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            success, detail = False, f"{type(e).__name__}: {e}"
        ok += success
        print(f"{name:28s} {'ok  ' if success else 'FAIL'} {detail}", flush=True)
    print(f"predicted {ok}/{len(names)} models")


if __name__ == "__main__":
    main()
