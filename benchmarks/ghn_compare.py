"""GHN-2 against GHN-3, trained here with the same wall-clock budget on the same classes.

Trains one GHN of each kind (`ghntrain`'s Trainer: same sampler, seed, data and batch sizes)
for ``--minutes`` each on ``--train-classes`` (default the first five CIFAR-10 classes), then
measures each the two ways this project does:

- held-out accuracy of predicted parameters, without training (``ghntrain.evaluate`` on the
  run's held-out sampled architectures, test images of the training classes): mean over the
  architectures with its 95% interval, against their random init;
- the fine-tuning gain on ``--transfer-classes`` (default the other five), plain and
  post-processed, paired by seed with its 95% interval (``benchmarks/ghn_transfer.py``).

    python benchmarks/ghn_compare.py --data ../shared/data/cifar10-jpeg [--minutes 30]
        [--hid 32] [--heads 8] [--layers 3] [--epochs 10] [--seeds 3]

The cosine schedule runs over ``--max-steps``; a budget that ends first stops there, so both
GHNs see the same schedule up to where the slower one stops. Checkpoints go to ``--out``, each
with a ``<kind>.json`` of how it was trained; run again with the same training settings, the
comparison reuses them and trains nothing (the fine-tuning flags may differ). Both GHNs train
before anything else runs, each alone on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import ghn_transfer

from analysis._stats import estimate
from ghn import load_ghn, save_atomic
from ghntrain import (
    TrainConfig,
    Trainer,
    evaluate,
    held_out_archs,
    load_images,
    read_checkpoint,
)

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
KINDS = ("ghn2", "ghn3")


def train_for(kind: str, args: argparse.Namespace, classes: tuple[str, ...], out: Path
              ) -> tuple[Path, str]:
    """Train a GHN of ``kind`` until ``--minutes`` pass (or ``--max-steps``); its checkpoint
    path and how far it got in words. A checkpoint of the same settings already at
    ``<out>/<kind>.pt`` is reused (a comparison stopped during fine-tuning goes on from there)."""
    cfg = TrainConfig(model=kind, steps=args.max_steps, hid=args.hid, heads=args.heads,
                      layers=args.layers, meta_batch=args.meta_batch, batch_size=args.batch_size,
                      image_size=args.image_size, held_out=args.held_out,
                      families=tuple(args.families.split(",")), seed=args.seed)
    path, record = out / f"{kind}.pt", out / f"{kind}.json"
    if path.is_file() and record.is_file():
        done = json.loads(record.read_text())
        if done["train_config"] == json.loads(json.dumps(dataclasses.asdict(cfg))) \
                and done["minutes"] == args.minutes and done["classes"] == list(classes):
            return path, f"{done['trained']}, reused from {path}"
    images = load_images(args.data, classes, "train", args.train_per_class)
    trainer = Trainer(cfg, images)
    start = time.perf_counter()
    while trainer.step_count < cfg.steps and time.perf_counter() < start + 60 * args.minutes:
        trainer.step()
    save_atomic(trainer.checkpoint(), path)
    trained = (f"{trainer.step_count} steps in {time.perf_counter() - start:.0f} s "
               f"(budget {args.minutes:g} min)")
    record.write_text(json.dumps({"trained": trained, "minutes": args.minutes,
                                  "classes": list(classes),
                                  "train_config": dataclasses.asdict(cfg)}))
    return path, trained


def held_out_accuracy(path: Path, args: argparse.Namespace, classes: tuple[str, ...]) -> str:
    """Mean held-out top-1 of the GHN's predictions, and of random init, with intervals."""
    ghn = load_ghn(path)
    train_config = read_checkpoint(path)["train_config"]  # its held-out set, as `evaluate`
    images = load_images(args.data, classes, "test", args.eval_per_class)
    results = evaluate(ghn, held_out_archs(train_config, len(classes)), images.x, images.y,
                       images.mean, images.std, image_size=train_config["image_size"])
    pred = estimate([r.predicted for r in results])
    floor = estimate([r.random_init for r in results])
    return (f"held-out top-1 {100 * pred.mean:.1f}% (95% interval {100 * pred.lo:.1f} to "
            f"{100 * pred.hi:.1f}% over {pred.n} architectures; their random init "
            f"{100 * floor.mean:.1f}%, chance {100 / len(classes):.1f}%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ghn_transfer.add_arguments(p, ghn_and_classes=False)  # --data and the fine-tuning flags
    p.add_argument("--minutes", type=float, default=30.0, help="training budget of each GHN")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--train-classes", default=",".join(CIFAR10[:5]))
    p.add_argument("--transfer-classes", default=",".join(CIFAR10[5:]))
    p.add_argument("--hid", type=int, default=32)
    p.add_argument("--heads", type=int, default=8, help="GHN-3 only")
    p.add_argument("--layers", type=int, default=3, help="GHN-3 only")
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--held-out", type=int, default=20)
    p.add_argument("--families", default=",".join(TrainConfig().families))
    p.add_argument("--train-per-class", type=int, default=None)
    p.add_argument("--eval-per-class", type=int, default=200, help="held-out test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("ghn_compare"))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    train_classes = tuple(c.strip() for c in args.train_classes.split(",") if c.strip())
    transfer_classes = [c.strip() for c in args.transfer_classes.split(",") if c.strip()]
    # Each GHN trains alone on the machine, then both are measured; random init's fine-tuning
    # runs do not depend on the GHN, so both kinds pair with the same ones.
    trained = {kind: train_for(kind, args, train_classes, args.out) for kind in KINDS}
    lines, random_runs = [], {}
    for kind, (path, how) in trained.items():
        lines.append(f"{kind}: {how}; " + held_out_accuracy(path, args, train_classes))
        print(lines[-1], flush=True)
    for kind, (path, _) in trained.items():
        gains = ghn_transfer.transfer(args, str(path), transfer_classes,
                                      list(ghn_transfer.INITS), random_runs=random_runs)
        for init, g in gains.items():
            lines.append(f"{kind} fine-tuning gain[{init}]={100 * g.mean:+.1f} points (95% "
                         f"interval {100 * g.lo:+.1f} to {100 * g.hi:+.1f}, paired over "
                         f"{g.n} seeds)")
    print("\n".join(["", "summary:", *lines]))


if __name__ == "__main__":
    main()
