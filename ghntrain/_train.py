"""Train a GHN-2 or a GHN-3 on sampled architectures (ppuda's recipe), checkpoint it, resume it
exactly.

Each step draws a meta-batch of architectures (``ghntrain._archs``), predicts all their parameters
with the *same* computation as inference (``predict_tensors``: ``predicted_blocks`` tiled out of
place, where inference tiles them into storage), runs one augmented image batch through each
with ``torch.func.functional_call`` and updates the GHN on the mean cross-entropy: Adam, cosine
decay, gradient clipping. A trained GHN therefore predicts exactly the tensors it trained with.
Both kinds share the sampler, data, schedule and checkpoints; they differ in the model and in
the graph each reads (``build_graph`` for GHN-2, ``build_graph3`` for GHN-3), which is what the
trainer caches per architecture.

The trainer takes images as tensors (``TrainImages``) and knows nothing of datasets or sweeps;
``ghntrain.load_images`` builds them with trainable's cached decoder, and batches are augmented
with trainable's crop and flip, so a GHN trains on the images as trials see them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ghn import (
    GHN2,
    GHN2_SETTINGS,
    GHN3,
    GHN2Config,
    GHN3Config,
    Graph,
    Graph3,
    build_graph,
    build_graph3,
    load_ghn,
    predict_tensors,
    predicted_names,
    save_atomic,
)
from ghntrain._archs import FAMILIES, ArchSampler, ArchSpec, build
from trainable import PAD, crop_flip, pad_for_crop, to_input

log = logging.getLogger(__name__)
_MODEL_CACHE = 512  # built (model, graph) pairs kept; small families repeat often
MODELS = ("ghn2", "ghn3")  # the GHN kinds `python -m ghn train --model` builds


@dataclass(frozen=True)
class TrainConfig:
    """One GHN training run; stored in every checkpoint (``train_config``) to resume exactly."""

    steps: int = 1000
    meta_batch: int = 4  # architectures per step (ppuda: 8)
    batch_size: int = 64  # images per step, shared by the meta-batch
    lr: float = 1e-3
    weight_decay: float = 1e-5
    grad_clip: float = 5.0  # max global grad norm; 0 = off
    hid: int = 32
    max_shape: tuple[int, ...] = (64, 64, 16, 16)
    image_size: int = 32
    families: tuple[str, ...] = FAMILIES
    held_out: int = 20  # architectures never trained on, for `evaluate`
    held_out_seed: int = 12345
    seed: int = 0  # architecture draws, image batches, GHN init
    checkpoint_every: int = 100  # steps (the last step always checkpoints)
    log_every: int = 10
    model: str = field(default="ghn2", metadata={"help": "the GHN to train: ghn2 or ghn3"})
    heads: int = field(default=8, metadata={"help": "GHN-3 attention heads (must divide hid)"})
    layers: int = field(default=3, metadata={"help": "GHN-3 transformer layers"})

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        for name in ("steps", "meta_batch", "batch_size", "hid", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"need lr > 0, weight_decay >= 0, grad_clip >= 0, got "
                             f"{self.lr}, {self.weight_decay}, {self.grad_clip}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        ArchSampler(self.families, held_out=0)  # names the unknown families
        if self.model == "ghn3":
            self.ghn3_config(1)  # GHN3Config names what it refuses (heads, layers, hid)

    def ghn3_config(self, num_classes: int) -> GHN3Config:
        """The GHN-3 this run trains (``model='ghn3'``)."""
        return GHN3Config(hid=self.hid, heads=self.heads, layers=self.layers,
                          max_shape=tuple(self.max_shape), num_classes=num_classes)

    def new_ghn(self, num_classes: int) -> GHN2 | GHN3:
        """A freshly initialised GHN of this run's kind (seed the RNG first)."""
        if self.model == "ghn3":
            return GHN3(self.ghn3_config(num_classes))
        return GHN2(GHN2Config(max_shape=tuple(self.max_shape), num_classes=num_classes,
                               hid=self.hid))


@dataclass
class TrainImages:
    """uint8 NHWC training images with int64 labels 0..k-1, and the normalisation (1, C, 1, 1)."""

    x: torch.Tensor
    y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    classes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes) or int(self.y.max()) + 1


def prepare_arch(model: nn.Module, image_size: int, name: str, kind: str = "ghn2"
                 ) -> Graph | Graph3:
    """The graph of a training architecture, of the kind the GHN reads (``kind``: ghn2 or
    ghn3); refuses one the GHN cannot predict entirely (a parameter it never sees would train
    nothing and silently keep its random init)."""
    size = (3, image_size, image_size)
    try:
        graph = build_graph3(model, size) if kind == "ghn3" else build_graph(model, size)
    except ValueError as e:
        raise ValueError(f"architecture {name}: the GHN's graph builder cannot handle it: {e}")\
            from e
    predicted = predicted_names(graph, model)
    missing = [n for n, _ in model.named_parameters() if n not in predicted]
    if missing:
        raise ValueError(f"architecture {name}: {_KIND_NAMES[kind]} cannot predict "
                         f"{', '.join(missing)} (only Conv2d, Linear, BatchNorm2d and LayerNorm "
                         "parameters on the path from input to output are predicted); leave "
                         "such layers out")
    return graph


_KIND_NAMES = {"ghn2": "GHN-2", "ghn3": "GHN-3"}


def ghn_checkpoint_config(ghn: GHN2 | GHN3) -> dict[str, Any]:
    """The 'config' entry `load_ghn` reads: an official GHN-2 checkpoint's, or the project
    GHN-3 format's (``{'ghn': 'ghn3', hid, heads, layers, ...}``)."""
    c = ghn.config
    if isinstance(ghn, GHN3):  # as `save_ghn3` writes it
        return {"ghn": "ghn3", "hid": c.hid, "heads": c.heads, "layers": c.layers,
                "max_shape": list(c.max_shape), "num_classes": c.num_classes}
    return {**GHN2_SETTINGS, "hid": c.hid, "max_shape": list(c.max_shape),
            "num_classes": c.num_classes}


class Trainer:
    """Owns the GHN, its optimiser, schedule and RNGs; ``step`` does one meta-batch update."""

    def __init__(self, cfg: TrainConfig, images: TrainImages, *, init: str | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.num_classes = images.num_classes
        torch.manual_seed(cfg.seed)
        self.ghn = cfg.new_ghn(self.num_classes)
        if init is not None:
            _load_matching(self.ghn, load_ghn(init))
        self.ghn.to(self.device).train()
        self.opt = torch.optim.Adam(self.ghn.parameters(), lr=cfg.lr,
                                    weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=cfg.steps)
        self.sampler = ArchSampler(cfg.families, held_out=cfg.held_out,
                                   held_out_seed=cfg.held_out_seed)
        # Data-parallel (a torch.distributed group, e.g. under Ray Train): every worker starts
        # from the same GHN, draws its own architectures and images, and applies the mean
        # gradient, so the GHNs stay identical; one worker is the plain single-process run.
        dist = torch.distributed
        self.rank, self.world = ((dist.get_rank(), dist.get_world_size())
                                 if dist.is_available() and dist.is_initialized() else (0, 1))
        self.arch_rng = random.Random(cfg.seed + 1_000_003 * self.rank)
        self.data_gen = torch.Generator(self.device).manual_seed(cfg.seed + 1_000_003 * self.rank)
        self.images = _padded(images, self.device)
        self.step_count = 0
        self.meta: dict[str, Any] = {}  # the caller's own entries (data, tracking run id)
        self._models: OrderedDict[ArchSpec, tuple[nn.Module, Graph | Graph3]] = OrderedDict()
        self._unpredictable: set[ArchSpec] = set()

    # -- one step ---------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        """Sample a meta-batch and a batch, update the GHN on their mean cross-entropy."""
        nets = [self._draw() for _ in range(self.cfg.meta_batch)]
        x, y = self._batch()
        self.opt.zero_grad(set_to_none=True)
        loss_sum = correct = 0.0
        for model, graph in nets:
            params = predict_tensors(self.ghn, graph, model)
            logits = torch.func.functional_call(model, params, (x,))
            loss = F.cross_entropy(logits, y)
            (loss / len(nets)).backward()  # one backward per net: the memory of one at a time
            loss_sum += loss.item()
            correct += (logits.argmax(1) == y).float().mean().item()
        if self.world > 1:
            for p in self.ghn.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world
        if self.cfg.grad_clip:
            grad_norm = float(nn.utils.clip_grad_norm_(self.ghn.parameters(), self.cfg.grad_clip))
        else:
            grad_norm = math.nan
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        self.step_count += 1
        n = len(nets)
        return {"loss": loss_sum / n, "acc": correct / n, "lr": lr, "grad_norm": grad_norm}

    def _draw(self) -> tuple[nn.Module, Graph | Graph3]:
        """The next sampled architecture this GHN predicts entirely. GHN-3's graph builder
        follows the official one, whose head heuristics lose the classifier bias of a few
        sampled nets; those are redrawn (from the same seeded stream, so runs stay exact)
        rather than trained with a parameter the GHN never sees. Every GHN-2 draw is kept."""
        for _ in range(100):
            spec = self.sampler.sample(self.arch_rng)
            if spec in self._unpredictable:
                continue
            try:
                return self._model(spec)
            except ValueError as e:
                if self.cfg.model != "ghn3":
                    raise
                self._unpredictable.add(spec)
                log.info("skipping %s", e)
        raise ValueError(f"no architecture of {self.cfg.families} that the GHN predicts "
                         "entirely in 100 draws")

    def _model(self, spec: ArchSpec) -> tuple[nn.Module, Graph | Graph3]:
        """The built architecture and its graph of this GHN's kind, kept in an LRU cache."""
        if spec in self._models:
            self._models.move_to_end(spec)
            return self._models[spec]
        model = build(spec, self.num_classes)
        graph = prepare_arch(model, self.cfg.image_size, spec.name, self.cfg.model)
        model.to(self.device)
        self._models[spec] = (model, graph)
        if len(self._models) > _MODEL_CACHE:
            self._models.popitem(last=False)
        return model, graph

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch with a random 4-pixel-padded crop and flip, normalised, resized."""
        imgs, g, b = self.images, self.data_gen, self.cfg.batch_size
        dev = imgs.x.device
        idx = torch.randint(0, len(imgs.y), (b,), generator=g, device=dev)
        dy = torch.randint(0, 2 * PAD + 1, (b,), generator=g, device=dev)
        dx = torch.randint(0, 2 * PAD + 1, (b,), generator=g, device=dev)
        flip = torch.rand(b, generator=g, device=dev) < 0.5
        batch = crop_flip(imgs.x, idx, dy, dx, flip)
        return to_input(batch, imgs.mean, imgs.std, self.cfg.image_size), imgs.y[idx]

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """The official layout ({'state_dict', 'config', 'epoch'}) plus the resume state; every
        entry loads with ``torch.load(weights_only=True)``."""
        return {
            "state_dict": {k: v.detach().cpu() for k, v in self.ghn.state_dict().items()},
            "config": ghn_checkpoint_config(self.ghn),
            "epoch": self.step_count * self.cfg.batch_size // len(self.images.y),
            "step": self.step_count,
            "train_config": dataclasses.asdict(self.cfg),
            "classes": list(self.images.classes),
            "meta": dict(self.meta),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": self._rng_states(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from ``checkpoint()``'s dict: same config required, every state restored."""
        saved = ckpt.get("train_config")
        if saved is None or "optimizer" not in ckpt:
            raise ValueError("checkpoint has no resume state (optimizer, RNGs): it was not "
                             "written by `python -m ghn train`; use --init to start from it")
        now = dataclasses.asdict(self.cfg)
        # a field added since the run started reads as its default (e.g. model: ghn2)
        saved = {**dataclasses.asdict(TrainConfig()), **saved}
        diff = {k: (_plain(saved.get(k)), _plain(v)) for k, v in now.items()
                if _plain(saved.get(k)) != _plain(v)}
        if list(ckpt.get("classes", [])) != list(self.images.classes):
            diff["classes"] = (ckpt.get("classes"), self.images.classes)
        if diff:
            raise ValueError(f"cannot resume: the run was started with other settings "
                             f"(saved, now): {diff}")
        self.ghn.load_state_dict(ckpt["state_dict"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        rngs = ckpt["rng"]
        if len(rngs) != self.world:
            raise ValueError(f"cannot resume: the run used {len(rngs)} workers, now {self.world}")
        rng = rngs[self.rank]
        self.arch_rng.setstate(_as_tuple(rng["arch"]))
        self.data_gen.set_state(rng["data"])
        torch.set_rng_state(rng["torch"])
        self.step_count = int(ckpt["step"])
        self.meta = dict(ckpt.get("meta", {}))


    def _rng_states(self) -> list[dict[str, Any]]:
        """Every worker's RNG states, in rank order (a collective call when data-parallel)."""
        own = {"arch": self.arch_rng.getstate(), "data": self.data_gen.get_state().cpu(),
               "torch": torch.get_rng_state()}
        if self.world == 1:
            return [own]
        states: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(states, own)
        return states


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, list)) else v


def _as_tuple(v: Any) -> Any:
    return tuple(_as_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _padded(images: TrainImages, device: torch.device) -> TrainImages:
    if images.x.dtype != torch.uint8 or images.x.dim() != 4:
        raise ValueError(f"images must be uint8 NHWC, got {images.x.dtype} {tuple(images.x.shape)}")
    return TrainImages(pad_for_crop(images.x).to(device), images.y.to(device),
                       images.mean.to(device), images.std.to(device), list(images.classes))


def _load_matching(ghn: GHN2 | GHN3, source: GHN2 | GHN3) -> None:
    """Fine-tune from another GHN: copy every tensor whose shape matches (a different class
    count changes the classifier decoders, which then start fresh). A GHN-2 and a GHN-3 share
    no architecture, so one cannot start the other."""
    if type(ghn) is not type(source):
        raise ValueError(f"--init {source.checkpoint_id} is a {type(source).__name__}; this run "
                         f"trains a {type(ghn).__name__} (--model)")
    own, fresh = ghn.state_dict(), []
    for k, v in source.state_dict().items():
        if k in own and own[k].shape == v.shape:
            own[k].copy_(v)
        else:
            fresh.append(k)
    if fresh:
        log.warning("--init %s: %s differ in shape (class count %d vs %d, or another size) "
                    "and start fresh", source.checkpoint_id, ", ".join(fresh),
                    source.num_classes, ghn.num_classes)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint as ``Trainer.checkpoint`` wrote it (tensors and plain data only);
    a damaged file raises ValueError, which the command line reports as a user error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on a damaged file
        raise ValueError(f"{path} is not a readable checkpoint ({e!r}); start a new run "
                         "with another --out") from e


def train(trainer: Trainer, out: Path, *,
          on_log: Callable[[int, dict[str, float]], None] | None = None,
          on_checkpoint: Callable[[Path], None] | None = None) -> dict[str, float]:
    """Run ``trainer`` to ``cfg.steps``, logging every ``log_every`` steps and checkpointing to
    ``out`` every ``checkpoint_every`` steps and at the end; returns the last window's means."""
    cfg = trainer.cfg
    window: list[dict[str, float]] = []
    start, t0 = trainer.step_count, time.perf_counter()
    means: dict[str, float] = {}
    while trainer.step_count < cfg.steps:
        window.append(trainer.step())
        s = trainer.step_count
        if s % cfg.log_every == 0 or s == cfg.steps:
            means = {k: sum(m[k] for m in window) / len(window) for k in window[0]}
            rate = (s - start) / (time.perf_counter() - t0)
            means["steps_per_s"] = rate
            if trainer.rank == 0:
                log.info("step %d/%d loss %.4f acc %.3f lr %.2e %.2f steps/s ETA %s", s, cfg.steps,
                     means["loss"], means["acc"], means["lr"], rate,
                     _eta((cfg.steps - s) / rate))
            if on_log and trainer.rank == 0:
                on_log(s, means)
            window = []
        if s % cfg.checkpoint_every == 0 or s == cfg.steps:
            ckpt = trainer.checkpoint()  # collective: every worker takes part
            if trainer.rank == 0:
                save_atomic(ckpt, out)
            if on_checkpoint and trainer.rank == 0:
                on_checkpoint(out)
    return means


def _eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"
