"""Does a GHN trained here help fine-tuning on classes it never saw? Paired seeds, intervals.

Fine-tunes ``--arch`` (default resnet18 at 32x32) on ``--classes`` of an ImageFolder tree, from
random init and from the parameters ``--ghn`` predicts, with the same seeds (same n-shot draw,
data order and init of whatever the GHN does not predict), and prints each seed's test accuracy
at the best validation epoch, then the mean ± std per init and the paired gain with its 95%
interval (the report's statistics, `analysis._stats`). Issue 14's target: GHN init beats random
by >= 3 points, mean of 3 seeds.

    python benchmarks/ghn_transfer.py --ghn ghn_5cls.pt --data ../shared/data/cifar10-jpeg \\
        --classes dog,frog,horse,ship,truck [--epochs 10] [--seeds 3] [--n-shots 100]

The trials use the smoke recipe's optimiser (SGD lr 0.05, wd 5e-4, batch 64) and its standard
stem (cheap on a CPU); ``--small-stem`` gives the 32x32 stem of the paper's recipes.
"""

from __future__ import annotations

import argparse
import time

from analysis._stats import estimate, paired
from trainable import get_recipe, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ghn", required=True, help="GHN-2 checkpoint (e.g. from python -m ghn train)")
    p.add_argument("--data", required=True, help="ImageFolder tree with train/ and test/")
    p.add_argument("--classes", required=True, help="comma-separated class names")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-shots", type=int, default=100)
    p.add_argument("--test-per-class", type=int, default=200)
    p.add_argument("--small-stem", action="store_true")
    args = p.parse_args()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    acc: dict[str, dict[int, float]] = {"random": {}, "ghn": {}}
    for seed in range(1, args.seeds + 1):
        for init in ("random", "ghn"):
            cfg = get_recipe("smoke", **{
                "arch": args.arch, "init": init, "ghn": args.ghn, "seed": seed,
                "small_stem": args.small_stem, "optim.epochs": args.epochs,
                "data.dataset": args.data, "data.classes": classes,
                "data.n_shots": args.n_shots, "data.val_per_class": 50,
                "data.test_per_class": args.test_per_class, "test_eval": "on_best_val"})
            history: list[dict[str, float]] = []
            start = time.perf_counter()
            train(cfg, report=history.append)
            best = max(history, key=lambda m: (m["val/acc"], -m["epoch"]))
            acc[init][seed] = best["test/acc"]
            print(f"seed {seed} {init:6s} test/acc {100 * best['test/acc']:.1f}% at best val "
                  f"epoch {int(best['epoch'])} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    for init, values in acc.items():
        e = estimate(values.values())
        print(f"{init:6s} {100 * e.mean:.1f}% ± {100 * e.std:.1f} over {e.n} seeds "
              f"(95% interval {100 * e.lo:.1f}-{100 * e.hi:.1f}%)")
    g = paired(acc["ghn"], acc["random"])
    print(f"ghn_transfer_gain_points={100 * g.mean:+.1f} (95% interval {100 * g.lo:+.1f} to "
          f"{100 * g.hi:+.1f}, paired over {g.n} seeds)")


if __name__ == "__main__":
    main()
