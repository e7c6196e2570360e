"""Time of a first GHN-2 prediction (graph construction + GHN forward + writing the parameters).

Claim: ResNet-50 at 224x224 takes <= 0.06 s median on a 2-core CPU, >= 3x faster than ppuda
(0.19 s, recorded as `ppuda_predict_s` in the reference case JSONs on this kind of machine).
Each repeat clears the graph cache, so every timed call is a first prediction for that
architecture; the process is warmed up on another model first. Also prints the repeat time,
which reuses the cached graph. Prints one line per model:

    resnet50 predict median_s=<x> ratio_vs_ppuda=<x / recorded> repeat_median_s=<y>

    python benchmarks/ghn_predict.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torchvision

from ghn import load_ghn, predict_parameters

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE_DIR = Path(os.environ.get("GHN2_REFERENCE_DIR", SHARED / "ghn2" / "reference"))
MODELS = {"resnet50": "case02_resnet50.json", "convnext_tiny": "case03_convnext_tiny.json",
          "densenet121": "case05_densenet121.json"}


def _median_s(model, ghn, repeats: int, clear_cache: bool) -> float:
    times = []
    for _ in range(repeats):
        if clear_cache:
            ghn.__dict__.pop("_graph_cache", None)
        start = time.perf_counter()
        predict_parameters(model, ghn)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    ghn = load_ghn(REFERENCE_DIR / "ghn2_random_imagenet_seed0.pt")
    predict_parameters(torchvision.models.resnet18(), ghn)  # warm up torch and the allocator
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, case in MODELS.items():
        recorded = json.loads((REFERENCE_DIR / case).read_text())["ppuda_predict_s"]
        model = torchvision.models.get_model(name)
        first = _median_s(model, ghn, args.repeats, clear_cache=True)
        repeat = _median_s(model, ghn, args.repeats, clear_cache=False)
        print(f"{name} predict median_s={first:.4f} ratio_vs_ppuda={first / recorded:.3f} "
              f"repeat_median_s={repeat:.4f}", flush=True)


if __name__ == "__main__":
    main()
