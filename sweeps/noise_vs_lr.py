"""Where does post-processing GHN-2's predicted parameters help? A sweep of noise x lr x arch.

    python sweeps/noise_vs_lr.py                          # smoke preset: CPU, minutes
    python sweeps/noise_vs_lr.py --preset paper --address auto --storage s3://bucket/sweeps \\
        --tracking-uri http://<head-ip>:5000              # on a GPU cluster (cluster.yaml)

Optuna TPE samples noise strength, learning rate, architecture and orthogonalisation; ASHA stops
weak trials by validation accuracy; every trial is an MLflow run under the sweep's parent run.
Baselines (random init, GHN without post-processing, the paper's recipe) run first.
`--resume` continues an interrupted sweep. `--help` lists every flag.
"""

import sys

from sweeps._config import parse_args

if __name__ == "__main__":
    cfg = parse_args()  # --help and bad flags answer here, before Ray, MLflow and Optuna load
    if not cfg.address:  # in-process Ray: on 127.0.0.1 only, decided as Ray is imported
        from sweeps._loopback import listen_on_loopback

        listen_on_loopback()
    from sweeps._run import run

    sys.exit(run(cfg))
