"""Does a GHN trained here help fine-tuning on classes it never saw? Paired seeds, intervals.

Fine-tunes ``--arch`` (default resnet18 at 32x32, the small stem of the paper's recipes, which
is also the stem of every architecture the GHN trained on) on ``--classes`` of an ImageFolder
tree from each ``--inits``: random init, the parameters ``--ghn`` predicts, and those
post-processed as the paper's recipe does (noise beta 3e-5 + orthogonalisation of the last
third of the layers, ResNet-50's share: the sweeps' `layer_rule`). Every init runs every
``--lrs`` with the same seeds (same n-shot draw, data order and init of what the GHN does not
predict); each init's lr is chosen by its mean *validation* accuracy over the seeds, and only
then are test accuracies (at each run's best validation epoch) compared: per init mean ± std,
and the gain over random init paired by seed with its 95% interval (`analysis._stats`).
The target: GHN init beats random by >= 3 points, mean of 3 seeds.

    python benchmarks/ghn_transfer.py --ghn ghn_5cls.pt --data ../shared/data/cifar10-jpeg \\
        --classes dog,frog,horse,ship,truck [--epochs 10] [--seeds 3] [--lrs 0.01,0.05]

The optimiser is the smoke recipe's (SGD, wd 5e-4, batch 64, cosine); ``--stem standard``
keeps torchvision's stem (16x fewer FLOPs at 32x32, an architecture the GHN never saw).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from analysis._stats import estimate, paired
from sweeps._config import SweepConfig
from sweeps._space import REFERENCE_RECIPE, layer_rule
from trainable import RECIPES, get_recipe, train

INITS = ("random", "ghn", "ghn+pp")


def _postproc(arch: str, init: str) -> dict[str, object]:
    if init != "ghn+pp":
        return {}
    ref = RECIPES[REFERENCE_RECIPE].postproc
    return {"postproc.beta": ref.beta, "postproc.orth": ref.orth,
            "postproc.layer": layer_rule(SweepConfig(recipe="smoke"), arch)}


def add_arguments(p: argparse.ArgumentParser, *, ghn_and_classes: bool = True) -> None:
    """The fine-tuning flags (``benchmarks/ghn_compare.py`` reuses all but --ghn, --classes)."""
    if ghn_and_classes:
        p.add_argument("--ghn", required=True,
                       help="GHN-2 or GHN-3 checkpoint (e.g. from python -m ghn train)")
        p.add_argument("--classes", required=True, help="comma-separated class names")
    p.add_argument("--data", required=True, help="ImageFolder tree with train/ and test/")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--inits", default=",".join(INITS), help=f"some of {','.join(INITS)}")
    p.add_argument("--lrs", default="0.01,0.05", help="learning rates; each init's by val acc")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-shots", type=int, default=100)
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--test-per-class", type=int, default=200)
    p.add_argument("--stem", choices=("small", "standard"), default="small")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    inits = [i.strip() for i in args.inits.split(",")]
    if unknown := set(inits) - set(INITS):
        p.error(f"--inits: unknown {sorted(unknown)}; known: {', '.join(INITS)}")
    if "random" not in inits:
        p.error("--inits must include random: gains are paired with it")
    for init, g in transfer(args, args.ghn, classes, inits).items():
        print(f"ghn_transfer_gain_points[{init}]={100 * g.mean:+.1f} (95% interval "
              f"{100 * g.lo:+.1f} to {100 * g.hi:+.1f}, paired over {g.n} seeds)")


def transfer(args: argparse.Namespace, ghn: str, classes: list[str], inits: list[str],
             random_runs: dict[float, dict[int, tuple[float, float]]] | None = None
             ) -> dict[str, Any]:
    """Fine-tune from every init at every lr and seed, print each run and each init's chosen
    lr; return each non-random init's test-accuracy gain over random, paired by seed.

    ``random_runs`` (lr -> seed -> (val, test)) is random init's runs, filled in here: they do
    not depend on the GHN, so a run already in it is not run again."""
    lrs = [float(x) for x in args.lrs.split(",")]
    # (init, lr) -> seed -> (val, test) at the best validation epoch
    runs: dict[tuple[str, float], dict[int, tuple[float, float]]] = {}
    if random_runs is not None:
        runs.update({("random", lr): random_runs.setdefault(lr, {}) for lr in lrs})
    for seed in range(1, args.seeds + 1):
        for init in inits:
            for lr in lrs:
                if seed in runs.get((init, lr), {}):
                    continue
                cfg = get_recipe("smoke", **{
                    "arch": args.arch, "init": "random" if init == "random" else "ghn",
                    "ghn": ghn, "seed": seed, "small_stem": args.stem == "small",
                    "optim.lr": lr, "optim.epochs": args.epochs, "data.dataset": args.data,
                    "data.classes": classes, "data.n_shots": args.n_shots,
                    "data.val_per_class": args.val_per_class,
                    "data.test_per_class": args.test_per_class, "test_eval": "on_best_val",
                    **_postproc(args.arch, init)})
                history: list[dict[str, float]] = []
                start = time.perf_counter()
                train(cfg, report=history.append)
                best = max(history, key=lambda m: (m["val/acc"], -m["epoch"]))
                runs.setdefault((init, lr), {})[seed] = (best["val/acc"], best["test/acc"])
                print(f"seed {seed} {init:7s} lr {lr:g}: val/acc {100 * best['val/acc']:.1f}% "
                      f"test/acc {100 * best['test/acc']:.1f}% at epoch {int(best['epoch'])} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    test: dict[str, dict[int, float]] = {}
    for init in inits:
        val = {lr: statistics.mean(v for v, _ in runs[init, lr].values()) for lr in lrs}
        lr = max(lrs, key=lambda x: (val[x], -x))  # ties to the smaller lr
        test[init] = {seed: t for seed, (_, t) in runs[init, lr].items()}
        e = estimate(test[init].values())
        print(f"{init:7s} lr {lr:g} (mean val/acc {100 * val[lr]:.1f}%): test "
              f"{100 * e.mean:.1f}% ± {100 * e.std:.1f} over {e.n} seeds "
              f"(95% interval {100 * e.lo:.1f}-{100 * e.hi:.1f}%)")
    return {init: paired(test[init], test["random"]) for init in inits if init != "random"}


if __name__ == "__main__":
    main()
