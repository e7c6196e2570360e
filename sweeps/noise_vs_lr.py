"""Where does post-processing a GHN's predicted parameters help? A sweep of noise x lr x arch.

    python sweeps/noise_vs_lr.py                          # smoke preset: CPU, minutes
    python sweeps/noise_vs_lr.py --preset paper --address auto --storage s3://bucket/sweeps \\
        --tracking-uri http://<head-ip>:5000              # on a GPU cluster (cluster.yaml)

Optuna TPE samples noise strength, learning rate, architecture and orthogonalisation; ASHA stops
weak trials by validation accuracy; every trial is an MLflow run under the sweep's parent run.
Baselines (random init, GHN without post-processing, the paper's recipe) run first.
`--resume` continues an interrupted sweep; `--dry-run` prints what would run; `--config FILE`
reads the flags from YAML or TOML. `--help` lists every flag.
"""

import gc
import json
import logging
import sys

from sweeps._config import parse_command


def show_sweep_logs() -> None:
    """The sweep's own lines on the terminal as bare lines: progress and results on stdout,
    warnings and errors on stderr. The tracking's notes on the runs it continues stay quiet."""
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    sweeps = logging.getLogger("sweeps")
    sweeps.setLevel(logging.INFO)
    sweeps.propagate = False  # once, whatever handlers Ray or MLflow give the root logger
    for handler in (out, err):
        handler.setFormatter(logging.Formatter("%(message)s"))
        sweeps.addHandler(handler)
    logging.getLogger("sweeps.tracking").setLevel(logging.WARNING)


def main() -> int:
    """The sweep command: flags in, exit status out (2: bad input, 130: interrupted by Ctrl-C,
    143: by SIGTERM)."""
    cfg, dry_run = parse_command()  # --help and bad flags answer here, before Ray and MLflow
    if dry_run:
        from sweeps._space import plan

        print(json.dumps(plan(cfg), indent=2))
        return 0
    if not cfg.address:  # in-process Ray: on 127.0.0.1 only, decided as Ray is imported
        from sweeps._loopback import listen_on_loopback

        listen_on_loopback()
    from sweeps._imports import collector_paused

    with collector_paused():
        from sweeps._preflight import BadInput
        from sweeps._run import run

    show_sweep_logs()
    try:
        return run(cfg)
    except BadInput as e:  # as argparse answers a bad flag
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    status = main()
    # Everything is written and closed by now. The interpreter's last garbage collections walk
    # the millions of objects torch, Ray and MLflow hold, about 2 s after the last line; frozen,
    # they are skipped (exit handlers still run: Ray's shutdown, the log handlers' flush).
    gc.freeze()
    sys.exit(status)
