"""One training step, eager or captured with ``torch.compile``.

At 32x32 a resnet50 step on a GPU is a few hundred kernels that each take microseconds, so the
GPU waits on Python. ``TrainStep`` compiles the step's tensor work (input normalisation, forward,
loss; the backward is compiled with it) once per trial: mode ``reduce-overhead`` on CUDA replays
it as CUDA graphs, the default mode on CPU fuses kernels. Shapes never change (``train_batches``
yields full batches only), so it compiles once. Where compilation fails, the trial goes on eagerly
after one warning that says why. torch keeps its compiled code in its on-disk caches
(``$TORCHINDUCTOR_CACHE_DIR``, default ``/tmp/torchinductor_<user>``), so later trials of the same
architecture on a node compile faster.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from ._config import TrialConfig
from ._data import Splits, to_input

_logger = logging.getLogger(__name__)


def compile_mode(setting: str, device: torch.device) -> str | None:
    """The ``torch.compile`` mode for ``TrialConfig.compile`` on ``device``; None: eager."""
    cuda = device.type == "cuda"
    if setting == "off" or (setting == "auto" and not cuda):
        return None
    return "reduce-overhead" if cuda else "default"


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
            x = to_input(xb, splits, cfg.image_size, channels_last=cuda)
            with autocast(device):
                out = model(x)
            return F.cross_entropy(out.float(), yb, label_smoothing=smoothing), out

        self.model, self.device = model, device
        self.mode = compile_mode(cfg.compile, device)
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
        t0 = time.perf_counter()
        try:
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
        return result
