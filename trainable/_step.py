"""One training step, eager or captured with ``torch.compile``.

At 32x32 a resnet50 step on a GPU is a few hundred kernels that each take microseconds, so the
GPU waits on Python. ``TrainStep`` compiles the step's tensor work (input normalisation, forward,
loss; the backward is compiled with it) once per trial, in the mode ``TrialConfig.compile``
names: ``default`` fuses kernels, ``reduce-overhead`` also replays the step as CUDA graphs (on
CUDA; on CPU it is ``default``). Shapes never change (``train_batches`` yields full batches
only), so it compiles once. Where compilation fails, the trial goes on eagerly after one warning
that says why; where torch compiles but skips the CUDA graphs, one warning says so too.

Compilation is paid once per node and architecture where torch allows: its on-disk caches
(inductor's FX graphs and kernels, AOTAutograd's graphs) live in ``<cache>/torch-compile`` on
the node's own disk unless ``$TORCHINDUCTOR_CACHE_DIR`` says otherwise, so a later trial of the
same architecture loads compiled code instead of compiling it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from ghn import cache_dir

from ._config import TrialConfig
from ._data import Splits, to_input

_logger = logging.getLogger(__name__)


COMPILE_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # read by torch's inductor at each compile


def compile_mode(setting: str, device: torch.device) -> str | None:
    """The ``torch.compile`` mode for ``TrialConfig.compile`` on ``device``; None: eager.
    CUDA graphs exist on CUDA only, so ``reduce-overhead`` is the default mode elsewhere."""
    cuda = device.type == "cuda"
    if setting == "off" or (setting == "auto" and not cuda):
        return None
    if setting == "default" or not cuda:
        return "default"
    return "reduce-overhead"


def use_node_compile_cache() -> str:
    """Point torch's compile caches at ``<cache>/torch-compile`` before the first compile, unless
    the user chose another directory than torch's default; returns the directory in use."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get(COMPILE_CACHE_ENV)  # importing torch._dynamo sets torch's default
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ[COMPILE_CACHE_ENV] = str(cache_dir() / "torch-compile")
    return os.environ[COMPILE_CACHE_ENV]


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class TrainStep:
    """``step(images, labels) -> (loss, logits)``, gradients accumulated: uint8 NHWC batch in,
    normalised, forward, loss, backward. Compiled at its first call when ``cfg.compile`` asks."""

    def __init__(self, model: nn.Module, splits: Splits, cfg: TrialConfig) -> None:
        device = splits.train_x.device
        cuda = device.type == "cuda"
        smoothing = cfg.optim.label_smoothing

        def forward_loss(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = to_input(xb, splits.mean, splits.std, cfg.image_size, channels_last=cuda)
            with autocast(device):
                out = model(x)
            return F.cross_entropy(out.float(), yb, label_smoothing=smoothing), out

        self.model, self.device = model, device
        self.mode = compile_mode(cfg.compile, device)
        if cfg.compile == "reduce-overhead" and not cuda:
            _logger.info("compile='reduce-overhead' on %s: CUDA graphs are CUDA only, so the step "
                         "compiles in the default mode", device)
        self._eager = forward_loss
        self._compiled = None
        self._compile_s = 0.0

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode is None:
            return self._backward(*self._eager(xb, yb))
        if self._compiled is None:
            return self._first_compiled(xb, yb)
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are consumed
        return self._backward(*self._compiled(xb, yb))

    def take_compile_time(self) -> float:
        """Seconds spent compiling since the last call (the first step's, compilation included)."""
        seconds, self._compile_s = self._compile_s, 0.0
        return seconds

    @staticmethod
    def _backward(loss: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss.backward()
        return loss, out

    def _first_compiled(
        self, xb: torch.Tensor, yb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compile and run the first step (torch compiles the backward at its first call)."""
        import torch._inductor.config as inductor
        from torch._dynamo.utils import counters

        t0 = time.perf_counter()
        _logger.debug("torch compile caches in %s", use_node_compile_cache())
        skips = counters["inductor"]["cudagraph_skips"]
        # torch compiles with one worker process per CPU of the node; a packed trial owns only
        # its share (Ray sets the trial's threads to its CPUs): four trials starting four
        # workers each (a Python process with torch apiece) would crowd a g5.xlarge's 4 CPUs
        # and 16 GiB.
        threads = inductor.patch(compile_threads=max(1, torch.get_num_threads()))
        try:
            with threads:
                self._compiled = torch.compile(self._eager, mode=self.mode)
                result = self._backward(*self._compiled(xb, yb))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as e:  # any capture failure: the step still runs eagerly
            _logger.warning("torch.compile(mode=%r) of the train step failed, training eagerly: "
                            "%s: %s", self.mode, type(e).__name__, (str(e).splitlines() or [""])[0])
            self.mode, self._compiled = None, None
            self.model.zero_grad(set_to_none=True)  # a half-run compiled backward left nothing
            return self(xb, yb)
        self._compile_s += time.perf_counter() - t0
        if self.mode == "reduce-overhead" and counters["inductor"]["cudagraph_skips"] > skips:
            _logger.warning("torch.compile(mode='reduce-overhead') skipped CUDA graphs for the "
                            "train step (torch's warning above says why): it runs compiled, "
                            "one launch per kernel")
        return result
