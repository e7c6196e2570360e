"""Speed and memory of GHN-2 training steps (`python -m ghn train`'s inner loop).

Prints steps/s and median seconds per step after a warm-up, and the peak memory of a step:
on CUDA the allocator's peak within a step (max over steps), on CPU the process's peak
resident set (torch's CPU allocator keeps no statistics; it includes torch itself, ~300 MB).
Images are synthetic uint8 32x32 (the speed of a step does not depend on their content),
5 classes as in benchmarks/ghn_transfer.py. One line:

    ghn_train device=cpu meta_batch=4 batch=64 hid=32 size=32 steps_per_s=<x> s_per_step=<y>
        peak_mem_mb=<z>

then where a step's time goes: the GHN's prediction, the predicted nets' forward pass, and the
rest (backward through both, the optimiser), each timed alone on fresh meta-batches.

    python benchmarks/ghn_train.py [--steps 10] [--meta-batch 4] [--device cuda]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch

from ghn import predict_tensors
from ghntrain import FAMILIES, TrainConfig, Trainer, TrainImages


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hid", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    n = 500
    images = TrainImages(torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g),
                         torch.arange(n) % 5, torch.full((1, 3, 1, 1), 0.5),
                         torch.full((1, 3, 1, 1), 0.25), [f"c{i}" for i in range(5)])
    cfg = TrainConfig(steps=args.warmup + args.steps, meta_batch=args.meta_batch,
                      batch_size=args.batch_size, hid=args.hid, image_size=args.image_size,
                      families=tuple(args.families.split(",")))
    trainer = Trainer(cfg, images, device=args.device)
    cuda = trainer.device.type == "cuda"
    for _ in range(args.warmup):
        trainer.step()
    times, peaks = [], []
    for _ in range(args.steps):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer.step()
        if cuda:
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() / 2**20)
        times.append(time.perf_counter() - start)
    split = _time_split(trainer, args.steps)
    if cuda:
        peak, where = max(peaks), torch.cuda.get_device_name(trainer.device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        where = f"{_cpu_name()}, {torch.get_num_threads()} threads"
    print(f"ghn_train device={trainer.device.type} meta_batch={args.meta_batch} "
          f"batch={args.batch_size} hid={args.hid} size={args.image_size} "
          f"steps_per_s={len(times) / sum(times):.3f} "
          f"s_per_step={statistics.median(times):.3f} peak_mem_mb={peak:.1f} ({where})")
    step = statistics.median(times)
    rest = max(step - split["predict"] - split["forward"], 0.0)
    print(f"where a step goes (medians): GHN prediction {split['predict']:.3f} s "
          f"({100 * split['predict'] / step:.0f}%), predicted nets' forward "
          f"{split['forward']:.3f} s ({100 * split['forward'] / step:.0f}%), backward through "
          f"both and the update {rest:.3f} s ({100 * rest / step:.0f}%)")


def _time_split(trainer: Trainer, steps: int) -> dict[str, float]:
    """Median seconds per step of the GHN's prediction and of the nets' forward pass alone, over
    fresh meta-batches (what remains of a step is the backward pass and the optimiser)."""
    predict, forward = [], []
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for _ in range(steps):
        specs = [trainer.sampler.sample(trainer.arch_rng) for _ in range(trainer.cfg.meta_batch)]
        x, _ = trainer._batch()
        t_pred = t_fwd = 0.0
        for spec in specs:
            model, graph = trainer._model(spec)
            sync()
            t0 = time.perf_counter()
            params = predict_tensors(trainer.ghn, graph, model)
            sync()
            t1 = time.perf_counter()
            with torch.no_grad():
                torch.func.functional_call(model, params, (x,))
            sync()
            t_pred, t_fwd = t_pred + t1 - t0, t_fwd + time.perf_counter() - t1
        predict.append(t_pred)
        forward.append(t_fwd)
    return {"predict": statistics.median(predict), "forward": statistics.median(forward)}


if __name__ == "__main__":
    main()
