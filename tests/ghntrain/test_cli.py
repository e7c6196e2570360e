"""The command lines: `python -m ghntrain train|evaluate`, the same commands under
`python -m ghn`, and a Ray Train worker that loads no command line."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_both_entry_points_offer_train_and_evaluate():
    ghn = _run("-m", "ghn", "--help")
    assert ghn.returncode == 0 and "{predict,verify,train,evaluate}" in ghn.stdout
    ghntrain = _run("-m", "ghntrain", "--help")
    assert ghntrain.returncode == 0 and "{train,evaluate}" in ghntrain.stdout
    train = _run("-m", "ghntrain", "train", "--help")
    assert train.returncode == 0 and "--max-shape" in train.stdout


def test_a_ray_train_worker_imports_library_modules_only():
    """What unpickling the worker function loads: ghntrain's library, no CLI, no __main__."""
    code = ("import sys; from ghntrain._distributed import _worker; "
            "print(sorted(m for m in sys.modules if m.endswith(('_cli', '__main__')) "
            "and m.split('.')[0] in ('ghn', 'ghntrain', 'trainable')))")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
