"""Where does post-processing GHN-2's predicted parameters help? A sweep of noise x lr x arch.

    python sweeps/noise_vs_lr.py                          # smoke preset: CPU, minutes
    python sweeps/noise_vs_lr.py --preset paper --address auto --storage s3://bucket/sweeps \\
        --tracking-uri http://<head-ip>:5000              # on a GPU cluster (cluster.yaml)

Optuna TPE samples noise strength, learning rate, architecture and orthogonalisation; ASHA stops
weak trials by validation accuracy; every trial is an MLflow run under the sweep's parent run.
Baselines (random init, GHN without post-processing, the paper's recipe) run first.
`--resume` continues an interrupted sweep; `--dry-run` prints what would run; `--config FILE`
reads the flags from YAML or TOML. `--help` lists every flag.
"""

import json
import sys

from sweeps._config import parse_command

if __name__ == "__main__":
    cfg, dry_run = parse_command()  # --help and bad flags answer here, before Ray and MLflow
    if dry_run:
        from sweeps._space import plan

        print(json.dumps(plan(cfg), indent=2))
        sys.exit(0)
    if not cfg.address:  # in-process Ray: on 127.0.0.1 only, decided as Ray is imported
        from sweeps._loopback import listen_on_loopback

        listen_on_loopback()
    from sweeps._run import run

    sys.exit(run(cfg))
