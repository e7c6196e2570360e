"""Command line: `python -m ghn predict ARCH` (a demo), `verify CHECKPOINT` (known answers),
`train --data PATH|cifar10 --out FILE` (train a GHN-2 or GHN-3) and `evaluate CKPT --data ...`."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time

import torch
import torchvision

from ghn._adjust import adjust_for_small_images
from ghn._checkpoint import load_ghn
from ghn._predict import predict_parameters
from ghn._verify import PUBLISHED_NORMS, total_norm, verify
from ghntrain import add_commands


def torchvision_classifier(name: str, num_classes: int) -> torch.nn.Module:
    """A torchvision classifier by name, with a clear error for unknown names."""
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SystemExit(f"error: unknown model {name!r}: not a torchvision classification "
                         f"model.{hint} See torchvision.models.list_models().")
    return torchvision.models.get_model(name, num_classes=num_classes)


def _predict(args: argparse.Namespace) -> int:
    model = torchvision_classifier(args.arch, args.num_classes)
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
    # An entry point, imported by nothing, may reach up: `train` and `evaluate` are ghntrain's
    # (`python -m ghntrain`), offered here too so that one command line covers GHNs.
    add_commands(sub)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
