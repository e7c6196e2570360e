"""Command line: `python -m ghn predict ARCH` (a demo), `verify CHECKPOINT` (known answers),
`train --data PATH|cifar10 --out FILE` (train a GHN-2) and `evaluate CKPT --data ...`."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import sys
import time
from pathlib import Path

import torch
import torchvision

from ghn._adjust import adjust_for_small_images
from ghn._checkpoint import load_ghn
from ghn._predict import predict_parameters
from ghn._verify import PUBLISHED_NORMS, total_norm, verify

# MLflow's UI opens an experiment without this tag in its GenAI view, not on runs and charts
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def build_model(name: str, num_classes: int) -> torch.nn.Module:
    """A torchvision classifier by name, with a clear error for unknown names."""
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SystemExit(f"error: unknown model {name!r}: not a torchvision classification "
                         f"model.{hint} See torchvision.models.list_models().")
    return torchvision.models.get_model(name, num_classes=num_classes)


def _predict(args: argparse.Namespace) -> int:
    model = build_model(args.arch, args.num_classes)
    ghn = load_ghn(args.ghn)
    if args.image_size == 32:
        adjust_for_small_images(model)
    start = time.perf_counter()
    pred = predict_parameters(model, ghn, predict_classifier=args.num_classes == ghn.num_classes)
    seconds = time.perf_counter() - start
    print(f"{args.arch}: predicted {len(pred.predicted)} parameter tensors with {ghn!r} "
          f"in {seconds:.3f} s ({pred.graph.n_nodes} graph nodes)")
    if pred.not_predicted:
        print(f"  kept their own initialisation: {', '.join(pred.not_predicted)}")
    print(f"  total parameter norm {total_norm(model):.4f}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    expected = dict(PUBLISHED_NORMS.get(args.checkpoint, {}))
    for item in args.expect or []:
        name, _, value = item.partition("=")
        expected[name] = float(value)
    if not expected:
        raise SystemExit(f"error: no known norms for {args.checkpoint!r}: give --expect "
                         "MODEL=NORM (published norms exist for: "
                         f"{', '.join(PUBLISHED_NORMS)})")
    checks = verify(load_ghn(args.checkpoint), expected, rtol=args.rtol)
    for check in checks:
        print(check)
    passed = all(c.passed for c in checks)
    print("pass" if passed else "fail")
    return 0 if passed else 1


def _load_images(data: str, classes: tuple[str | int, ...], split: str,
                 per_class: int | None):
    """(x, y, mean, std, class names) of one split, through trainable's cached decoder. The
    normalisation is always the training images' (as trials normalise)."""
    import torch

    from trainable import DataConfig
    from trainable._data import PAD, load_splits

    cfg = DataConfig(dataset=data, classes=classes, n_shots=per_class if split == "train" else 1,
                     val_per_class=1, test_per_class=per_class if split == "test" else 1)
    s = load_splits(cfg, torch.device("cpu"))
    names = _data_classes(cfg)
    if split == "train":
        return s.train_x[:, PAD:-PAD, PAD:-PAD].contiguous(), s.train_y, s.mean, s.std, names
    return s.test_x, s.test_y, s.mean, s.std, names


def _data_classes(cfg) -> list[str]:
    from trainable._data import _decoded

    return list(_decoded(cfg)["classes"])


def _classes(text: str | None) -> tuple[str | int, ...]:
    if not text:
        return ()
    return tuple(int(c) if c.strip().isdigit() else c.strip() for c in text.split(","))


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (tuples comma-separated), defaults from the dataclass."""
    from ghn._train import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, tuple):
            kind = type(default[0])
            p.add_argument(flag, default=default, metavar=",".join(map(str, default)),
                           type=lambda t, kind=kind: tuple(kind(v) for v in t.split(",")))
        else:
            p.add_argument(flag, type=type(default), default=default)


def _train(args: argparse.Namespace) -> int:
    from ghn._train import TrainConfig, Trainer, TrainImages, train

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    out = Path(args.out)
    if args.resume and not out.is_file():
        raise ValueError(f"--resume: {out} does not exist; run without --resume to start")
    if out.exists() and not args.resume:
        raise ValueError(f"{out} exists: pass --resume to continue that run, or another --out")
    if args.num_workers > 1:
        return _train_on_ray(args, cfg, out)
    x, y, mean, std, names = _load_images(args.data, _classes(args.classes), "train",
                                          args.train_per_class)
    trainer = Trainer(cfg, TrainImages(x, y, mean, std, names), init=args.init,
                      device=args.device)
    if args.resume:
        import torch

        trainer.restore(_read_checkpoint(out, torch))
        print(f"resuming {out} at step {trainer.step_count}/{cfg.steps}")
    trainer.meta.setdefault("data", args.data)
    on_log, on_ckpt, finish = _tracking(trainer, args.tracking_uri, args.experiment,
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


def _train_on_ray(args: argparse.Namespace, cfg, out: Path) -> int:
    from ghn._distributed import train_on_ray

    _load_images(args.data, _classes(args.classes), "train", args.train_per_class)  # fail early
    tracking_uri = _absolute_sqlite(args.tracking_uri)
    if tracking_uri:  # created here, its artifacts go where the user runs the command
        _experiment(tracking_uri, args.experiment)
    train_on_ray({"train_config": dataclasses.asdict(cfg), "data": args.data,
                  "classes": list(_classes(args.classes)), "train_per_class": args.train_per_class,
                  "out": str(out.resolve()), "init": args.init, "resume": args.resume,
                  "tracking_uri": tracking_uri,
                  "experiment": args.experiment},
                 num_workers=args.num_workers, use_gpu=args.use_gpu)
    print(f"done: {cfg.steps} steps on {args.num_workers} Ray Train workers; checkpoint {out}")
    return 0


def _absolute_sqlite(uri: str | None) -> str | None:
    """A relative ``sqlite:///file`` made absolute: Ray Train workers run in their own dirs."""
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def _read_checkpoint(path: Path, torch) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on a damaged file
        raise ValueError(f"{path} is not a readable checkpoint ({e!r}); start a new run "
                         "with another --out") from e


def _experiment(uri: str, name: str) -> None:
    """Point MLflow at ``uri`` and experiment ``name``, created if new: where it is created
    fixes its artifact root (``./mlruns`` of the current directory with a sqlite store)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(name)
    mlflow.set_experiment_tag(*EXPERIMENT_KIND)


def _tracking(trainer, uri: str | None, experiment: str, *, run_name: str, data: str,
              init: str | None):
    """MLflow callbacks (on_log, on_checkpoint, finish) when ``uri`` is given; the run
    continues on --resume (its id is in the checkpoint)."""
    if not uri:
        return None, None, lambda: None
    import mlflow

    _experiment(uri, experiment)
    run_id = trainer.meta.get("mlflow_run_id")
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
    trainer.meta["mlflow_run_id"] = run.info.run_id
    if trainer.step_count == 0:
        mlflow.log_params({**dataclasses.asdict(trainer.cfg), "data": data,
                           "classes": ",".join(trainer.images.classes), "init": init,
                           "num_workers": trainer.world})

    def on_log(step, metrics):
        mlflow.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step)

    def on_ckpt(path):
        mlflow.log_artifact(str(path))

    return on_log, on_ckpt, mlflow.end_run


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from ghn._evaluate import evaluate, format_table, held_out_archs, named_archs
    from ghn._train import TrainConfig

    ghn = load_ghn(args.checkpoint)
    ckpt = _read_checkpoint(Path(args.checkpoint), torch)
    train_config = ckpt.get("train_config") or dataclasses.asdict(TrainConfig())
    classes = _classes(args.classes) or tuple(ckpt.get("classes") or ())
    x, y, mean, std, names = _load_images(args.data, classes, "test", args.test_per_class)
    if len(names) != ghn.num_classes:
        raise ValueError(f"the GHN predicts {ghn.num_classes} classes but the data has "
                         f"{len(names)} ({names}): pass --classes with the GHN's classes")
    size = args.image_size or train_config["image_size"]
    torch.manual_seed(0)  # the architectures' own random init: the floor, reproducibly
    if args.archs == "held-out":
        archs = held_out_archs(train_config, len(names))
    else:
        archs = named_archs([a for a in args.archs.split(",") if a], len(names))
    results = evaluate(ghn, archs, x, y, mean, std, image_size=size)
    print(f"{args.checkpoint}: top-1 of predicted parameters on {len(y)} test images, "
          f"{len(names)} classes, {size}x{size}")
    table = format_table(results, len(names))
    print(table)
    if args.tracking_uri:
        import mlflow

        _experiment(args.tracking_uri, args.experiment)
        with mlflow.start_run(run_name=f"evaluate {Path(args.checkpoint).stem}"):
            mlflow.log_params({"checkpoint": args.checkpoint, "archs": args.archs})
            n = len(results)
            mlflow.log_metrics({
                "eval/mean_acc": sum(r.predicted for r in results) / n,
                "eval/mean_acc_random_init": sum(r.random_init for r in results) / n,
                "eval/chance": 1 / len(names)})
            mlflow.log_text(table, "evaluate.txt")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ghn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predict a torchvision model's parameters")
    p.add_argument("arch", help="torchvision model name, e.g. resnet50")
    p.add_argument("--ghn", default=os.environ.get("GHN_CHECKPOINT", "ghn2-imagenet"),
                   help="checkpoint name or path (default: $GHN_CHECKPOINT or ghn2-imagenet)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=224, choices=(32, 224))
    p.set_defaults(run=_predict)
    v = sub.add_parser("verify", help="known-answer check of a checkpoint (total norms)")
    v.add_argument("checkpoint", help="ghn2-imagenet, or a checkpoint path with --expect")
    v.add_argument("--expect", action="append", metavar="MODEL=NORM",
                   help="expected total norm of a model's predicted parameters (repeatable)")
    v.add_argument("--rtol", type=float, default=1e-4)
    v.set_defaults(run=_verify)
    t = sub.add_parser("train", help="train a GHN-2 on sampled architectures")
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
    _add_config_flags(t)
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
    args = parser.parse_args(argv)
    if args.command == "train":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                            datefmt="%H:%M:%S")
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
