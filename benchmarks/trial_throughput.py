"""Images/s of the trial's training loop against a bare PyTorch loop, measured in the same run.

Claim: the trial's loop (on-device augmentation, per-step schedule, on-device metric sums) costs
under 5% against the barest loop with the same model, batch size and device (goal: ratio >= 0.95
for resnet18 at 32x32 on CPU). The two loops alternate over several rounds and the best round of
each is compared, so load from other processes hits both alike.

    python benchmarks/trial_throughput.py --arch resnet18            # CPU, small-image stem
    python benchmarks/trial_throughput.py --arch resnet50 --batch-size 96 --trials 1 2 4  # GPU

Prints, last, ``<arch> trial_vs_bare=<ratio>``. ``--trials`` also reports the aggregate images/s
of that many trial loops sharing the device (separate processes, as Ray would run them): the
images all of them trained in one shared wall-clock window (``--window-s``), divided by it.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import time

import torch
import torch.nn.functional as F

from trainable import TrialConfig
from trainable._data import PAD, Splits
from trainable._loop import make_optimizer, make_schedule, resolve_device, train_epoch
from trainable._model import build_model


def synthetic_splits(n: int, size: int, device: torch.device) -> Splits:
    """Random uint8 images: throughput does not depend on pixel values."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    padded = F.pad(x, (0, 0, PAD, PAD, PAD, PAD))
    stat = torch.full((1, 3, 1, 1), 0.5)
    return Splits(padded.to(device), y.to(device), x[:1].to(device), y[:1].to(device),
                  x[:1].to(device), y[:1].to(device), stat.to(device), stat.to(device), 10)


def trial_loop(cfg: TrialConfig, model: torch.nn.Module, splits: Splits) -> float:
    """Images/s of one epoch of the trial's own ``train_epoch``."""
    opt = make_optimizer(cfg.optim, model)
    sched = make_schedule(cfg.optim, opt, 10**6)
    gen = torch.Generator(splits.train_x.device).manual_seed(0)
    t0 = time.perf_counter()
    _, _, n = train_epoch(model, opt, sched, splits, cfg, gen)
    return n / (time.perf_counter() - t0)


def bare_loop(cfg: TrialConfig, model: torch.nn.Module, splits: Splits) -> float:
    """Images/s of the plainest loop: fixed pre-made float batches, SGD step, nothing else."""
    dev = splits.train_x.device
    cuda = dev.type == "cuda"
    bs, n = cfg.optim.batch_size, len(splits.train_y)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    x = torch.randn(bs, 3, cfg.image_size, cfg.image_size, device=dev).contiguous(
        memory_format=fmt)
    y = splits.train_y[:bs]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    t0 = time.perf_counter()
    for _ in range(n // bs):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss.item()  # sync, as train_epoch does
    return (n // bs) * bs / (time.perf_counter() - t0)


def setup(args: argparse.Namespace) -> tuple[TrialConfig, torch.nn.Module, Splits]:
    cfg = TrialConfig.from_flat({
        "arch": args.arch, "image_size": args.image_size, "init": "random",
        "device": args.device, "optim.batch_size": args.batch_size, "optim.lr": 1e-3,
    })
    device = resolve_device(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model, _ = build_model(cfg, num_classes=10)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model.to(device, memory_format=fmt)
    # Whole batches only, so both loops do the same number of identical steps.
    n = args.steps * args.batch_size
    return cfg, model, synthetic_splits(n, args.image_size, device)


def compare(args: argparse.Namespace) -> float:
    cfg, model, splits = setup(args)
    trial_model, bare_model = model, copy.deepcopy(model)
    trial_loop(cfg, trial_model, splits), bare_loop(cfg, bare_model, splits)  # warm-up
    trial, bare = [], []
    for r in range(args.rounds):
        trial.append(trial_loop(cfg, trial_model, splits))
        bare.append(bare_loop(cfg, bare_model, splits))
        print(f"round {r + 1}: trial {trial[-1]:.1f} img/s, bare {bare[-1]:.1f} img/s", flush=True)
    print(f"{args.arch} {cfg.image_size}x{cfg.image_size} batch {cfg.optim.batch_size} "
          f"on {splits.train_x.device}: trial {max(trial):.1f} img/s, bare {max(bare):.1f} img/s")
    return max(trial) / max(bare)


def _worker(args: argparse.Namespace, start: mp.Value, out: mp.Queue) -> None:
    cfg, model, splits = setup(args)
    trial_loop(cfg, model, splits)  # warm-up outside the timed window
    while start.value == 0:
        time.sleep(0.01)
    time.sleep(max(0.0, start.value - time.monotonic()))
    images = 0
    while time.monotonic() - start.value < args.window_s:
        trial_loop(cfg, model, splits)
        images += len(splits.train_y)
    out.put((images, time.monotonic()))


def shared(args: argparse.Namespace, k: int) -> float:
    """Aggregate images/s of ``k`` trial loops in separate processes on one device, over the
    same window: monotonic clocks are shared by the processes of one machine."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Value("d", 0.0), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(args, start, out)) for _ in range(k)]
    for p in procs:
        p.start()
    time.sleep(args.settle_s)  # let every process build its model before the clock starts
    start.value = time.monotonic() + 0.5
    done = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(d[0] for d in done) / (max(d[1] for d in done) - start.value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per timed epoch")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--trials", type=int, nargs="*", default=[], help="e.g. 1 2 4")
    ap.add_argument("--settle-s", type=float, default=20.0)
    ap.add_argument("--window-s", type=float, default=10.0, help="the shared window of --trials")
    args = ap.parse_args()
    for k in args.trials:
        print(f"{args.arch} {k} trial(s) sharing the device: {shared(args, k):.1f} img/s total",
              flush=True)
    ratio = compare(args)
    print(f"{args.arch} trial_vs_bare={ratio:.3f}")


if __name__ == "__main__":
    main()
