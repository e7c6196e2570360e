"""GHN-3 checkpoints: the official pickled state dicts and this project's own format.

Official files (the ghn3 Hugging Face repository) hold only a state dict, pickled as joblib
writes it; they are read by the restricted unpickler of `_unpickle.py` and their configuration
is inferred from the tensor shapes. The project's format is a `torch.save` dict that loads with
``weights_only=True``: {'state_dict', 'config': {'ghn': 'ghn3', hid, heads, layers, max_shape,
num_classes}} plus whatever a trainer adds ('classes', resume state).
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import torch

from ghn._files import layout_problems
from ghn._ghn3 import GHN3, GHN3Config, expected_state_shapes, infer_config
from ghn._model import GHN2, GHN2Config, as_ghn3_semantics
from ghn._model import expected_state_shapes as expected_state_shapes2
from ghn._unpickle import load_pickled_state_dict

# The official files at a fixed revision of huggingface.co/SamsungSAILMontreal/ghn3 (see
# docs/ghn3.md: the revision should be a commit hash; none could be looked up offline).
GHN3_HF_REVISION = "main"
GHN3_URLS = {
    name: f"https://huggingface.co/SamsungSAILMontreal/ghn3/resolve/{GHN3_HF_REVISION}/{file}"
    for name, file in [("ghn3-tm8", "ghn3tm8.pt"), ("ghn3-sm8", "ghn3sm8.pt"),
                       ("ghn3-lm8", "ghn3lm8.pt"), ("ghn3-xlm16", "ghn3xlm16.pt")]
}
# The three structural embeddings: top-level in the official files, under gnn.0. in files
# written by the current ghn3 training code.
_EMBEDDINGS = ("centrality_embed_in.weight", "centrality_embed_out.weight",
               "input_dist_embed.weight")
# A legacy (pre-zip) torch.save starts with the pickled magic number; official GHN-3 files are
# plain pickles of a dict and start otherwise.
_LEGACY_TORCH_PREFIX = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def is_official_ghn3_file(path: str | os.PathLike) -> bool:
    """A raw pickle stream (not a torch.save zip or legacy file)."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_PREFIX))
    return head[:1] == pickle.PROTO and head != _LEGACY_TORCH_PREFIX


def is_ghn3_state(state: dict) -> bool:
    """GHN-3's transformer layers, as opposed to GHN-2's GatedGNN (gnn.gru.*)."""
    return any(k.startswith("gnn.0.attn.") for k in state)


def normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Move the structural embeddings to the top level where a file has them in layer 0."""
    out = {}
    for k, v in state.items():
        if k.startswith("gnn.0.") and k[len("gnn.0."):] in _EMBEDDINGS:
            k = k[len("gnn.0."):]
        out[k] = v
    return out


def build_ghn3(state: dict[str, torch.Tensor], config: GHN3Config, path: Path) -> GHN3:
    """A GHN3 holding `state`'s tensors themselves (no copy), checked against `config`."""
    expected = expected_state_shapes(config)
    problems = layout_problems(state, expected)
    if problems:
        raise ValueError(f"{path} does not match the GHN-3 layout of {config}: "
                         f"{'. '.join(problems)}")
    bad = [k for k, v in state.items() if v.dtype != torch.float32]
    if bad:
        raise ValueError(f"{path}: GHN-3 tensors must be float32, not {', '.join(bad)}")
    with torch.device("meta"):
        ghn = GHN3(config)
    ghn.load_state_dict(state, strict=True, assign=True)  # adopt the loaded storages
    return ghn


def load_official(path: Path) -> GHN3 | GHN2:
    """An official (pickled state dict) file of GHN-3's repository: a GHN-3, or its GHN-2."""
    state = normalise_keys(load_pickled_state_dict(path))
    if not is_ghn3_state(state):
        return _ghn2_from_hub(state, path)
    return build_ghn3(state, infer_config(state), path)


def _ghn2_from_hub(state: dict[str, torch.Tensor], path: Path) -> GHN2:
    """The GHN-2 weights GHN-3's repository publishes (ghn2.pt, pickled like its own files):
    loaded as a GHN2 that predicts with GHN-3's semantics, as GHN-3's code runs them."""
    if not any(k.startswith("gnn.gru.") for k in state):
        raise ValueError(f"{path} holds neither a GHN-3 (gnn.0.attn.*) nor a GHN-2 "
                         "(gnn.gru.*) state dict")
    try:
        hid = state["embed.weight"].shape[1]
        m = math.isqrt(state["decoder.conv.2.weight"].shape[0])
        s = 11 if state["shape_enc.embed_spatial.weight"].shape[0] == 9 else 16
        nc = state["decoder.class_layer_predictor.1.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"{path}: GHN-2 state dict without {e}") from None
    config = GHN2Config(max_shape=(m, m, s, s), num_classes=nc, hid=hid)
    expected = expected_state_shapes2(config)
    state = {k: v.view(expected[k]) if k in expected and v.dim() == 2
             and len(expected[k]) == 4 else v for k, v in state.items()}  # 1x1 convs
    ghn = GHN2(config)
    try:
        ghn.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not match the GHN-2 layout: {e}") from None
    return as_ghn3_semantics(ghn)


def config_from_checkpoint(ckpt: dict, path: Path) -> GHN3Config:
    """The GHN3Config of a project-format (or ghn3 trainer) checkpoint."""
    cfg = ckpt.get("config") or {}
    state = ckpt["state_dict"]
    try:
        inferred = infer_config(normalise_keys(state))
        return GHN3Config(hid=int(cfg.get("hid", inferred.hid)),
                          heads=int(cfg.get("heads", inferred.heads)),
                          layers=int(cfg.get("layers", inferred.layers)),
                          max_shape=tuple(int(d) for d in cfg.get("max_shape",
                                                                  inferred.max_shape)),
                          num_classes=int(cfg.get("num_classes", inferred.num_classes)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path} has an invalid GHN-3 config {cfg}: {e}") from e


def checkpoint_dict(ghn: GHN3) -> dict:
    """The project format of a GHN-3 (loads with weights_only=True and through load_ghn)."""
    c = ghn.config
    out = {"state_dict": {k: v.detach().cpu() for k, v in ghn.state_dict().items()},
           "config": {"ghn": "ghn3", "hid": c.hid, "heads": c.heads, "layers": c.layers,
                      "max_shape": list(c.max_shape), "num_classes": c.num_classes}}
    if ghn.classes:
        out["classes"] = list(ghn.classes)
    return out


def save_ghn3(ghn: GHN3, path: str | os.PathLike) -> None:
    """Write `ghn` in the project format: what `python -m ghn train` would save."""
    torch.save(checkpoint_dict(ghn), path)


def save_official_format(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a state dict as the official GHN-3 files are written (a protocol-4 pickle of an
    OrderedDict of tensors, what joblib.dump produces for it); for tests and benchmarks."""
    from collections import OrderedDict

    with open(path, "wb") as f:
        pickle.dump(OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state.items()),
                    f, protocol=4)
