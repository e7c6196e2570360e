"""Peak memory of loading an official-format GHN-3 file with `load_ghn`.

Claim: loading needs at most 1.2x the file's size in resident memory (the tensors are views of
the bytes the restricted unpickler reads; nothing is copied a second time). A GHN-3 of the
xlm16 shape (hid 384, 16 heads, 24 layers, 1000 classes: a 2.6 GB file) is built with random
values, written as the official files are, and loaded in a fresh process, which reports its
peak RSS (VmHWM, reset just before loading; Linux) above its RSS after the imports.
Prints one line:

    file_bytes=<n> peak_rss_delta_bytes=<m> ratio=<m/n>

    python benchmarks/ghn3_load_memory.py [--shape xlm16|tm8] [--dir DIR]

`--shape tm8` (27.6 MB) runs in seconds for CI. Needs free disk for the file (2.6 GB for xlm16).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {  # the official variants' configurations
    "tm8": dict(hid=64, heads=8, layers=3, max_shape=(64, 64, 16, 16), num_classes=1000),
    "xlm16": dict(hid=384, heads=16, layers=24, max_shape=(384, 384, 16, 16), num_classes=1000),
}


def _write(shape: str, path: Path) -> None:
    import torch

    from ghn import GHN3, GHN3Config
    from ghn._checkpoint3 import save_official_format

    with torch.device("meta"):
        ghn = GHN3(GHN3Config(**SHAPES[shape]))
    # One tensor at a time, so writing does not hold the whole network twice either.
    state = {k: torch.empty(v.shape).uniform_(-0.01, 0.01) for k, v in ghn.state_dict().items()}
    save_official_format(state, path)


def _measure(path: str) -> None:
    import torch  # noqa: F401 - the baseline includes torch itself

    from ghn import load_ghn

    base = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    ghn = load_ghn(path)
    peak = _status_kib("VmHWM")
    n = sum(p.numel() for p in ghn.parameters())
    print(f"{(peak - base) * 1024} {n}")


def _status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="xlm16")
    parser.add_argument("--dir", default=None, help="where to write the temporary file")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure(args.measure)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / f"ghn3{args.shape}.pt"
        _write(args.shape, path)
        size = path.stat().st_size
        out = subprocess.run([sys.executable, __file__, "--measure", str(path)], check=True,
                             capture_output=True, text=True).stdout.split()
        delta, n_params = int(out[0]), int(out[1])
    print(f"shape={args.shape} params={n_params} file_bytes={size} "
          f"peak_rss_delta_bytes={delta} ratio={delta / size:.3f}")


if __name__ == "__main__":
    main()
