"""The one prepared device check: what to run once on a machine with a GPU, printing as it goes.

Claim: on one H100/H200 it measures, in under 8 minutes, what the trial loop must deliver:
the 2-epoch trials of resnet18 and resnet50 at 32x32 through ``trainable.train`` (bf16,
channels-last) eager, compiled (``compile=default``) and captured as CUDA graphs
(``compile=reduce-overhead``), with compile time and peak memory, and which capture mode is
faster; images/s of the trial loop against a bare eager loop in the same run; the time of one
paper-recipe resnet50 trial extrapolated from the measured epochs; the aggregate images/s of 1,
2, 4 and 8 trials sharing the GPU over one wall-clock window (without and, where it starts, with
NVIDIA MPS); the compile time of a trial in a fresh process once the node's compile cache holds
its step; and each of the throughput targets, met or missed. Every line is flushed, so
a run cut off still reports what it reached. Without CUDA (or with ``--tiny``) it runs the same
sections at CPU sizes in under a minute, eager only, so CI keeps it working.

    python benchmarks/gpu_check.py                 # CUDA when present, else --tiny
    python benchmarks/gpu_check.py --tiny          # CPU sizes
    python benchmarks/gpu_check.py --sections trials paper   # a subset

The data is synthetic (random 32x32 PNGs in a temporary ImageFolder tree, 100 shots per class):
throughput does not depend on pixel values. Trials start from a random init (no GHN checkpoint
is needed) and use a temporary cache directory.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from trial_throughput import bare_loop, synthetic_splits

from ghn import CACHE_ENV
from trainable import COMPILE_MODES, OptimConfig, TrialConfig, train
from trainable._data import steps_per_epoch
from trainable._loop import evaluate, make_optimizer, make_schedule, resolve_device, train_epoch
from trainable._model import build_model
from trainable._step import TrainStep

T0 = time.perf_counter()
SECTIONS = ("env", "trials", "bare", "paper", "concurrent", "cache")
# The throughput targets on one H100/H200 (on CPU, trial_throughput.py's trial_vs_bare >= 0.95 at
# real sizes: tiny sizes time a few milliseconds of work and judge nothing).
TARGET_VS_BARE = 2.0
TARGET_FOUR_VS_ONE = 3.0
TARGET_PAPER_S = 20.0


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


@dataclass(frozen=True)
class Sizes:
    """How big each section runs: GPU sizes, or CPU sizes for CI."""

    archs: tuple[str, ...]
    compile_modes: tuple[str, ...]
    shots: int  # training images per class (10 classes)
    val: int  # validation images per class
    test: int  # test images per class (the paper's 10k are extrapolated)
    batch: int
    epochs: int
    small_stem: bool
    concurrent: tuple[int, ...]
    window_s: float  # the shared wall-clock window of the concurrent trials
    eval_images: int  # images timed for the eval-per-image figure
    image: int  # image side in pixels


GPU = Sizes(("resnet18", "resnet50"), ("off", "default", "reduce-overhead"), 100, 50, 100, 96, 2,
            True, (1, 2, 4, 8), 8.0, 4000, 32)
# Seconds on a busy 2-core CPU: 20 images at 16x16, 2 steps an epoch.
TINY = Sizes(("resnet18",), ("off",), 2, 1, 1, 10, 2, False, (1, 2), 1.0, 20, 16)


def env_section(device: torch.device) -> None:
    say(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}, {os.cpu_count()} CPUs")
    if device.type != "cuda":
        say(f"device {device} (no CUDA: CPU sizes)")
        return
    p = torch.cuda.get_device_properties(device)
    say(f"device {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
        f"capability {p.major}.{p.minor}")
    smi = _run(["nvidia-smi", "--query-gpu=driver_version,compute_mode", "--format=csv,noheader"])
    say(f"driver, compute mode: {smi or 'nvidia-smi not found'}")
    mps = _run(["pgrep", "-x", "nvidia-cuda-mps-control"])
    say(f"an MPS daemon already runs: {'yes (pid ' + mps + ')' if mps else 'no'}")


def _run(cmd: list[str], env: dict | None = None, stdin: str | None = None) -> str:
    """A command's stdout, stripped; '' when it is missing or fails."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env,
                              input=stdin)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def make_dataset(root: Path, sz: Sizes) -> Path:
    """A random ImageFolder tree with train/ (shots + val per class) and test/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", sz.shots + sz.val), ("test", sz.test)):
        for c in range(10):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (sz.image, sz.image, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.png")
    return root


def trial_config(arch: str, compile_mode: str, data: Path, sz: Sizes, device: str) -> TrialConfig:
    return TrialConfig.from_flat({
        "arch": arch, "init": "random", "device": device, "small_stem": sz.small_stem,
        "image_size": sz.image,
        "compile": compile_mode, "data.dataset": str(data), "data.n_shots": sz.shots,
        "data.val_per_class": sz.val, "data.test_per_class": sz.test,
        "optim.batch_size": sz.batch, "optim.epochs": sz.epochs, "optim.lr": 0.01,
    })


def trials_section(data: Path, sz: Sizes, device: torch.device) -> dict:
    """2-epoch trials per compile mode and architecture; each one's epochs and peak memory."""
    results = {}
    for mode in sz.compile_modes:
        for arch in sz.archs:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t, epochs = time.perf_counter(), []

            def show(m: dict, arch: str = arch, mode: str = mode, epochs: list = epochs) -> None:
                epochs.append(m)
                say(f"  {arch} compile={mode} epoch {m['epoch']:.0f}: {m['images_per_s']:.0f} "
                    f"img/s, train {m['epoch_time_s']:.2f} s, compile {m['compile_time_s']:.1f} "
                    f"s, train/loss {m['train/loss']:.3f}")

            train(trial_config(arch, mode, data, sz, device.type), report=show)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0
            compile_s = sum(m["compile_time_s"] for m in epochs)
            say(f"trial {arch} compile={mode}: {epochs[-1]['images_per_s']:.0f} img/s (last "
                f"epoch), compile {compile_s:.1f} s, wall {time.perf_counter() - t:.1f} s, "
                f"peak {peak:.0f} MiB")
            results[(arch, mode)] = {**epochs[-1], "compile_s": compile_s}
    return results


def capture_summary(sz: Sizes, trials: dict) -> dict[str, str]:
    """Per architecture, each mode's last-epoch images/s and the fastest mode (returned)."""
    fastest = {}
    for arch in sz.archs:
        rates = {m: trials[arch, m]["images_per_s"] for m in sz.compile_modes
                 if (arch, m) in trials}
        if not rates:
            continue
        fastest[arch] = best = max(rates, key=rates.get)
        eager = f" = {rates[best] / rates['off']:.2f}x eager" if "off" in rates else ""
        say(f"capture {arch}: " + ", ".join(f"{m} {r:.0f}" for m, r in rates.items())
            + f" img/s; fastest: {best}{eager}")
    return fastest


def _model_cfg(arch: str, sz: Sizes, device: torch.device) -> TrialConfig:
    return TrialConfig(arch=arch, init="random", small_stem=sz.small_stem, device=device.type,
                       image_size=sz.image, optim=OptimConfig(batch_size=sz.batch, lr=1e-3))


def _model(cfg: TrialConfig, device: torch.device) -> torch.nn.Module:
    model, _ = build_model(cfg, num_classes=10)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    return model.to(device, memory_format=fmt)


def _epoch_images(sz: Sizes) -> int:
    """Images of one trial epoch (full batches): 1,056 for 1,000 images in batches of 96."""
    return steps_per_epoch(10 * sz.shots, sz.batch) * sz.batch


def bare_section(sz: Sizes, device: torch.device, trials: dict) -> dict:
    """The barest eager loop on the same model and batch, against each trial's last epoch;
    returns trial_vs_bare per (arch, mode)."""
    ratios = {}
    for arch in sz.archs:
        cfg = _model_cfg(arch, sz, device)
        model, splits = _model(cfg, device), synthetic_splits(_epoch_images(sz), sz.image, device)
        bare_loop(cfg, model, splits)  # warm-up: cuDNN picks its kernels
        bare = max(bare_loop(cfg, model, splits) for _ in range(2))
        for mode in sz.compile_modes:
            if (arch, mode) in trials:
                trial = trials[arch, mode]["images_per_s"]
                ratios[arch, mode] = trial / bare
                say(f"{arch} compile={mode}: trial {trial:.0f} img/s, bare eager {bare:.0f} "
                    f"img/s, trial_vs_bare={trial / bare:.2f}")
    return ratios


def paper_section(sz: Sizes, device: torch.device, trials: dict) -> dict[str, float]:
    """One paper-recipe trial (300 epochs of 1,000 images, 500 validation images each epoch,
    test on 10k at best validation), extrapolated from the measured epochs and evaluation;
    returns its seconds per compile mode."""
    arch = sz.archs[-1]
    cfg = _model_cfg(arch, sz, device)
    model = _model(cfg, device)
    splits = synthetic_splits(sz.batch, sz.image, device)
    shape = (sz.eval_images, sz.image, sz.image, 3)
    test_x = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    test_y = torch.zeros(sz.eval_images, dtype=torch.long, device=device)
    evaluate(model, splits, test_x, test_y, cfg)  # warm-up
    t = time.perf_counter()
    evaluate(model, splits, test_x, test_y, cfg)
    eval_pi = (time.perf_counter() - t) / sz.eval_images
    say(f"{arch} evaluation: {1 / eval_pi:.0f} img/s")
    n_test = 30  # on_best_val: test at each validation improvement, frequent early; 1..300
    totals = {}
    for mode in sz.compile_modes:
        m = trials.get((arch, mode))
        if m is None:
            continue
        train_s = m["epoch_time_s"] * 1056 / _epoch_images(sz)  # 11 steps of 96
        total = 300 * (train_s + 500 * eval_pi) + n_test * 10_000 * eval_pi + m["compile_s"]
        totals[mode] = total
        say(f"paper {arch} trial, compile={mode}: {total:.0f} s = 300 x ({train_s:.3f} s train "
            f"+ {500 * eval_pi:.3f} s val) + {n_test} x {10_000 * eval_pi:.2f} s test + "
            f"{m['compile_s']:.0f} s compile")
    return totals


def _worker(arch: str, sz: Sizes, device_name: str, inbox: mp.Queue, outbox: mp.Queue) -> None:
    """One trial loop in its own process, as Ray runs trials: set up, then run windows."""
    device = resolve_device(device_name)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    cfg = _model_cfg(arch, sz, device)
    model, splits = _model(cfg, device), synthetic_splits(_epoch_images(sz), sz.image, device)
    opt = make_optimizer(cfg.optim, model)
    sched = make_schedule(cfg.optim, opt, 10**6)
    step, gen = TrainStep(model, splits, cfg), torch.Generator(device).manual_seed(0)
    train_epoch(model, opt, sched, splits, cfg, gen, step)  # warm-up
    outbox.put("ready")
    while (msg := inbox.get()) is not None:
        start, window = msg
        time.sleep(max(0.0, start - time.monotonic()))
        images = 0
        while time.monotonic() - start < window:
            images += train_epoch(model, opt, sched, splits, cfg, gen, step)[2]
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0
        outbox.put((images, time.monotonic(), peak))


def concurrent_run(sz: Sizes, device: torch.device, label: str) -> dict[int, float]:
    """Aggregate images/s of k trial processes over one shared window, for each k. Their steps
    are eager: eight processes compiling at once would spend the check's time budget. Returns
    the aggregate images/s per k."""
    arch, ctx = sz.archs[-1], mp.get_context("spawn")
    outbox, inboxes = ctx.Queue(), [ctx.Queue() for _ in range(max(sz.concurrent))]
    procs = [ctx.Process(target=_worker, args=(arch, sz, device.type, q, outbox), daemon=True)
             for q in inboxes]
    for p in procs:
        p.start()
    rates: dict[int, float] = {}
    try:
        for _ in procs:
            outbox.get(timeout=300)
        base = None
        for k in sz.concurrent:
            start = time.monotonic() + 0.5
            for q in inboxes[:k]:
                q.put((start, sz.window_s))
            done = [outbox.get(timeout=sz.window_s + 300) for _ in range(k)]
            rate = sum(d[0] for d in done) / (max(d[1] for d in done) - start)
            rates[k] = rate
            base = base or rate
            say(f"{label}: {k} x {arch} at once: {rate:.0f} img/s in all ({rate / base:.2f}x one)"
                f", peak {max(d[2] for d in done):.0f} MiB per trial")
    except Exception as e:  # a worker that died (e.g. MPS refused it) leaves the queue empty
        say(f"{label}: stopped: {type(e).__name__} {e}; workers alive: "
            f"{sum(p.is_alive() for p in procs)}/{len(procs)}")
    finally:
        for q in inboxes:
            q.put(None)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return rates


def concurrent_section(sz: Sizes, device: torch.device, tmp: Path) -> dict[str, dict]:
    """Aggregate images/s per k without MPS and, on CUDA where its daemon starts, with it."""
    rates = {"no MPS": concurrent_run(sz, device, "no MPS")}
    if device.type != "cuda":
        say("MPS: CUDA only, skipped")
        return rates
    mps = start_mps(tmp)
    if mps is None:
        return rates
    old = {k: os.environ.get(k) for k in mps}
    os.environ.update(mps)  # spawned workers inherit it and connect to this daemon
    try:
        rates["MPS"] = concurrent_run(sz, device, "MPS")
    finally:
        _run(["nvidia-cuda-mps-control"], env={**os.environ}, stdin="quit\n")
        for k, v in old.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    return rates


def start_mps(tmp: Path) -> dict | None:
    """An MPS control daemon of this run's own (pipe and log in ``tmp``), or None and why."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        say("MPS: nvidia-cuda-mps-control not found, skipped")
        return None
    mps = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp / "mps-pipe"),
           "CUDA_MPS_LOG_DIRECTORY": str(tmp / "mps-log")}
    for d in mps.values():
        Path(d).mkdir()
    done = subprocess.run(["nvidia-cuda-mps-control", "-d"], env={**os.environ, **mps},
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        say(f"MPS did not start (rc {done.returncode}): {done.stderr.strip() or done.stdout}")
        return None
    say("MPS daemon started")
    return mps


def _fresh_trial(arch: str, mode: str, data: Path, sz: Sizes, device: str, out: mp.Queue) -> None:
    """One 1-epoch trial in a new interpreter (nothing compiled in memory): its compile time."""
    cfg = trial_config(arch, mode, data, sz, device)
    out.put(train(TrialConfig.from_flat({"optim.epochs": 1}, base=cfg))["compile_time_s"])


def cache_section(data: Path, sz: Sizes, device: torch.device, trials: dict) -> None:
    """The compile time of the last architecture's fastest compiled mode, measured again in a
    fresh process: what a later trial on the node pays once the compile cache holds the step."""
    arch = sz.archs[-1]
    modes = [m for m in sz.compile_modes if m != "off" and (arch, m) in trials]
    if not modes:
        say("compile cache: no compiled trial was measured (CPU sizes are eager), skipped")
        return
    mode = max(modes, key=lambda m: trials[arch, m]["images_per_s"])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_fresh_trial, args=(arch, mode, data, sz, device.type, out))
    proc.start()
    try:
        warm = out.get(timeout=300)
    except Exception as e:  # noqa: BLE001 - a dead or stuck process leaves the queue empty
        say(f"compile cache: stopped: {type(e).__name__} {e}")
        return
    finally:
        proc.join(timeout=30)
    first = ", ".join(f"{m} {trials[arch, m]['compile_s']:.1f} s" for m in modes)
    say(f"compile cache {arch} compile={mode}: {warm:.1f} s in a fresh process with the node's "
        f"cache ({os.environ.get('TORCHINDUCTOR_CACHE_DIR')}); in this run's trials: {first} "
        "(the first compiled mode cold, later ones reuse what they share with it)")


def targets_section(sz: Sizes, figures: dict, *, judged: bool) -> None:
    """The throughput targets, each met or missed (at GPU sizes: ``judged``), from the
    figures measured above, with the last architecture in its fastest mode."""
    arch = sz.archs[-1]
    mode = figures["fastest"].get(arch, "off")

    def judge(name: str, value: float | None, ok: bool, goal: str) -> None:
        verdict = ("met" if ok else "missed") if judged else "not judged at CPU sizes"
        shown = "not measured" if value is None else f"{value:.2f}, {verdict}"
        say(f"target {name} ({goal}): {shown}")

    ratio = figures["vs_bare"].get((arch, mode))
    judge(f"{arch} trial_vs_bare, compile={mode}", ratio,
          ratio is not None and ratio >= TARGET_VS_BARE, f">= {TARGET_VS_BARE}")
    for label, rates in figures["concurrent"].items():
        four = rates[4] / rates[1] if 1 in rates and 4 in rates else None
        judge(f"4 trials vs 1, {label}", four, four is not None and four >= TARGET_FOUR_VS_ONE,
              f">= {TARGET_FOUR_VS_ONE}x")
    paper = figures["paper"].get(mode)
    judge(f"paper {arch} trial seconds, compile={mode}", paper,
          paper is not None and paper <= TARGET_PAPER_S, f"<= {TARGET_PAPER_S:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU sizes (the default without CUDA)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--compile-modes", nargs="+", choices=COMPILE_MODES,
                    help="TrialConfig.compile values of the trials (GPU: off default "
                         "reduce-overhead; tiny: off)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    tiny = args.tiny or device.type != "cuda"
    sz = TINY if tiny else GPU
    if args.compile_modes:
        sz = Sizes(**{**vars(sz), "compile_modes": tuple(args.compile_modes)})
    say(f"gpu_check: sections {' '.join(args.sections)}, {'tiny' if tiny else 'GPU'} "
        f"sizes on {device}")
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as d:
        tmp = Path(d)
        os.environ[CACHE_ENV] = str(tmp / "cache")  # decoded data of this run only
        trials: dict = {}
        figures: dict = {"fastest": {}, "vs_bare": {}, "paper": {}, "concurrent": {}}
        if "env" in args.sections:
            env_section(device)
        if {"trials", "bare", "paper", "cache"} & set(args.sections):
            data = make_dataset(tmp / "data", sz)
            trials = trials_section(data, sz, device)
            figures["fastest"] = capture_summary(sz, trials)
        if "bare" in args.sections:
            figures["vs_bare"] = bare_section(sz, device, trials)
        if "paper" in args.sections:
            figures["paper"] = paper_section(sz, device, trials)
        if "concurrent" in args.sections:
            figures["concurrent"] = concurrent_section(sz, device, tmp)
        if "cache" in args.sections:
            cache_section(data, sz, device, trials)
        targets_section(sz, figures, judged=not tiny)
    say("gpu_check done")


if __name__ == "__main__":
    main()
