"""The ``train`` and ``evaluate`` commands: `python -m ghntrain train|evaluate ...`, also
offered by `python -m ghn` beside its own ``predict`` and ``verify``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import torch

from contract.flags import add_dataclass_flags
from ghn import load_ghn
from ghntrain._data import load_images
from ghntrain._distributed import train_on_ray
from ghntrain._evaluate import evaluate, format_table, held_out_archs, named_archs
from ghntrain._tracking import (
    absolute_sqlite,
    log_evaluation,
    training_callbacks,
    use_experiment,
)
from ghntrain._train import TrainConfig, Trainer, read_checkpoint, train


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``evaluate`` to the subcommands ``sub``; each sets ``run`` to the
    function that executes it (returning the exit status)."""
    t = sub.add_parser("train", help="train a GHN-2 or GHN-3 (--model) on sampled architectures")
    t.add_argument("--data", required=True, help="cifar10, cifar100 or an ImageFolder tree")
    t.add_argument("--classes", help="comma-separated class names or indices (default: all)")
    t.add_argument("--train-per-class", type=int, default=None,
                   help="training images per class (default: all)")
    t.add_argument("--out", required=True, help="checkpoint file (written atomically)")
    t.add_argument("--init", help="start from this GHN checkpoint (fine-tune a GHN)")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    t.add_argument("--device", default="cpu")
    t.add_argument("--num-workers", type=int, default=1,
                   help="> 1: data-parallel through Ray Train (gloo on CPU, NCCL on GPUs)")
    t.add_argument("--use-gpu", action="store_true", help="one GPU per Ray Train worker")
    t.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. sqlite:///mlflow.db")
    t.add_argument("--experiment", default="ghn-train")
    add_dataclass_flags(t, TrainConfig)
    t.set_defaults(run=_train)
    e = sub.add_parser("evaluate", help="top-1 of predicted parameters, without training")
    e.add_argument("checkpoint")
    e.add_argument("--data", required=True)
    e.add_argument("--classes", help="default: the classes the GHN was trained on")
    e.add_argument("--archs", default="held-out",
                   help="held-out (the run's held-out sampled architectures) or "
                        "comma-separated torchvision names")
    e.add_argument("--test-per-class", type=int, default=None)
    e.add_argument("--image-size", type=int, default=None, help="default: the training size")
    e.add_argument("--tracking-uri")
    e.add_argument("--experiment", default="ghn-train")
    e.set_defaults(run=_evaluate)


def main(argv: list[str] | None = None) -> int:
    """`python -m ghntrain train|evaluate ...`: the exit status; bad input (a missing file, a
    wrong value) prints one line to stderr and returns 2 instead of a traceback."""
    parser = argparse.ArgumentParser(prog="python -m ghntrain", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _classes(text: str | None) -> tuple[str | int, ...]:
    if not text:
        return ()
    return tuple(int(c) if c.strip().isdigit() else c.strip() for c in text.split(","))


def _train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    out = Path(args.out)
    if args.resume and not out.is_file():
        raise ValueError(f"--resume: {out} does not exist; run without --resume to start")
    if out.exists() and not args.resume:
        raise ValueError(f"{out} exists: pass --resume to continue that run, or another --out")
    if args.num_workers > 1:
        return _train_on_ray(args, cfg, out)
    images = load_images(args.data, _classes(args.classes), "train", args.train_per_class)
    trainer = Trainer(cfg, images, init=args.init, device=args.device)
    if args.resume:
        trainer.restore(read_checkpoint(out))
        print(f"resuming {out} at step {trainer.step_count}/{cfg.steps}")
    trainer.meta.setdefault("data", args.data)
    on_log, on_ckpt, finish = training_callbacks(trainer, args.tracking_uri, args.experiment,
                                                 run_name=out.stem, data=args.data,
                                                 init=args.init)
    try:
        last = train(trainer, out, on_log=on_log, on_checkpoint=on_ckpt)
    finally:
        finish()
    if last:
        print(f"done: {trainer.step_count} steps, last loss {last['loss']:.4f}, "
              f"acc {last['acc']:.3f}; checkpoint {out}")
    else:
        print(f"{out} is already at step {trainer.step_count}/{cfg.steps}: nothing to do")
    return 0


def _train_on_ray(args: argparse.Namespace, cfg: TrainConfig, out: Path) -> int:
    load_images(args.data, _classes(args.classes), "train", args.train_per_class)  # fail early
    tracking_uri = absolute_sqlite(args.tracking_uri)
    if tracking_uri:  # created here, its artifacts go where the user runs the command
        use_experiment(tracking_uri, args.experiment)
    train_on_ray({"train_config": dataclasses.asdict(cfg), "data": args.data,
                  "classes": list(_classes(args.classes)), "train_per_class": args.train_per_class,
                  "out": str(out.resolve()), "init": args.init, "resume": args.resume,
                  "tracking_uri": tracking_uri,
                  "experiment": args.experiment},
                 num_workers=args.num_workers, use_gpu=args.use_gpu)
    print(f"done: {cfg.steps} steps on {args.num_workers} Ray Train workers; checkpoint {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    ghn = load_ghn(args.checkpoint)
    ckpt = read_checkpoint(Path(args.checkpoint))
    train_config = ckpt.get("train_config") or dataclasses.asdict(TrainConfig())
    classes = _classes(args.classes) or tuple(ckpt.get("classes") or ())
    images = load_images(args.data, classes, "test", args.test_per_class)
    names = images.classes
    if len(names) != ghn.num_classes:
        raise ValueError(f"the GHN predicts {ghn.num_classes} classes but the data has "
                         f"{len(names)} ({names}): pass --classes with the GHN's classes")
    size = args.image_size or train_config["image_size"]
    torch.manual_seed(0)  # the architectures' own random init: the floor, reproducibly
    if args.archs == "held-out":
        archs = held_out_archs(train_config, len(names))
    else:
        archs = named_archs([a for a in args.archs.split(",") if a], len(names))
    results = evaluate(ghn, archs, images.x, images.y, images.mean, images.std,
                       image_size=size)
    print(f"{args.checkpoint}: top-1 of predicted parameters on {len(images.y)} test images, "
          f"{len(names)} classes, {size}x{size}")
    table = format_table(results, len(names))
    print(table)
    if args.tracking_uri:
        log_evaluation(args.tracking_uri, args.experiment, checkpoint=args.checkpoint,
                       archs=args.archs, results=results, num_classes=len(names), table=table)
    return 0
