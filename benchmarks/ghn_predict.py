"""Time of a first GHN-2 and GHN-3 prediction (graph construction + GHN forward + writing).

Claims on a 2-core CPU: GHN-2 predicts ResNet-50 at 224x224 in <= 0.06 s median, >= 3x faster
than ppuda (`ppuda_predict_s` in the GHN-2 reference JSONs); GHN-3 (the tm8-shaped reference
checkpoint) predicts ResNet-50 and ViT-B/16 >= 10x faster than ghn3 itself (`ghn3_predict_s`
in the GHN-3 reference JSONs: median of 3 calls after a warm-up, graph construction included).
Each timed call clears the graph cache, so every call is a first prediction for that
architecture; the process is warmed up first, and each model once more before timing. Prints
one line per GHN and model:

    ghn3 resnet50 predict median_s=<x> recorded_s=<r> speedup=<r / x> repeat_median_s=<y>

    python benchmarks/ghn_predict.py [--repeats 3] [--which ghn2,ghn3] [--threads N]

On a CPU shared with other jobs, torch's multi-threaded kernels can wait far longer for their
threads than they compute on graphs of a few hundred nodes; `--threads 1` shows that cost.
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

SHARED = Path(os.environ.get("GHN_SWEEP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REFERENCE_DIR = Path(os.environ.get("GHN2_REFERENCE_DIR", SHARED / "ghn2" / "reference"))
GHN3_REFERENCE_DIR = Path(os.environ.get("GHN3_REFERENCE_DIR", SHARED / "ghn3" / "reference"))
SETUPS = {  # GHN -> (checkpoint, recorded-time key, {model: case file})
    "ghn2": (REFERENCE_DIR / "ghn2_random_imagenet_seed0.pt", "ppuda_predict_s",
             {"resnet50": "case02_resnet50.json", "convnext_tiny": "case03_convnext_tiny.json",
              "densenet121": "case05_densenet121.json"}),
    "ghn3": (GHN3_REFERENCE_DIR / "ghn3tm8_random_seed0.pt", "ghn3_predict_s",
             {"resnet50": "case02_resnet50.json", "vit_b_16": "case04_vit_b_16.json",
              "resnet18": "case01_resnet18.json",
              "mobilenet_v3_small": "case05_mobilenet_v3_small.json"}),
}


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--which", default="ghn2,ghn3")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for which in args.which.split(","):
        checkpoint, key, models = SETUPS[which]
        ref_dir = checkpoint.parent
        ghn = load_ghn(checkpoint)
        predict_parameters(torchvision.models.resnet18(), ghn)  # warm up torch, allocator
        for name, case in models.items():
            recorded = json.loads((ref_dir / case).read_text())[key]
            model = torchvision.models.get_model(name)
            _median_s(model, ghn, 1, clear_cache=True)  # warm-up call, as ghn3's timing did
            first = _median_s(model, ghn, args.repeats, clear_cache=True)
            repeat = _median_s(model, ghn, args.repeats, clear_cache=False)
            print(f"{which} {name} predict median_s={first:.4f} recorded_s={recorded:.4f} "
                  f"speedup={recorded / first:.1f}x repeat_median_s={repeat:.4f}", flush=True)


if __name__ == "__main__":
    main()
