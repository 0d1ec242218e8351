"""``servicetime train|tune``: training from prepared features (the RayJob's entry point) and the settings search."""

from __future__ import annotations

import argparse
import sys

from components.cli.options import config_from_args as _config
from components.cli.options import data_root as _data_root


def cmd_train(args: argparse.Namespace) -> int:
    """The RayJob entry point: train from a features location, write the result location."""
    from components.cluster.train_job import train_entrypoint

    train_entrypoint(args.features, args.train_config, args.out)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Search the model's settings; ``--features``/``--out`` is the RayJob's form (staged inputs on S3)."""
    if args.features:
        from components.cluster.tune_job import tune_entrypoint

        if not (args.config_uri and args.out):
            print("error: --features needs --config-uri and --out (the RayJob's staged inputs)", file=sys.stderr)
            return 2
        tune_entrypoint(args.features, args.config_uri, args.out, args.trials)
        return 0
    from components.flows.tune import tune_workspace

    cfg = _config(args)
    s = tune_workspace(cfg, _data_root(cfg, args), args.trials)
    print(f"tuned {s['trials']} trials in {s['seconds']:.0f} s ({s['early_stopped']} stopped early by ASHA): "
          f"best val MAE {s['best_val_mae_s']:.1f} s (trial {s['best_trial']}) vs defaults "
          f"{s['defaults_val_mae_s']:.1f} s, {s['improvement_pct']:.1f} % better")
    print("  best settings: " + ", ".join(f"{k}={v}" for k, v in s["best_settings"].items()))
    print(f"  {s['best_path']} (the next `servicetime run` or `train` uses it; set train.use_tuned=false to not)")
    print(f"  report {s['report_path']}; MLflow run {s['mlflow_run_id']} with {len(s['child_run_ids'])} child runs")
    return 0


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train from prepared features (the RayJob entry point)")
    t.add_argument("--features", required=True)
    t.add_argument("--config", dest="train_config", required=True)
    t.add_argument("--out", required=True)
    t.set_defaults(func=cmd_train)

    tu = sub.add_parser("tune", help="search the model's settings with Ray Tune; the next run trains with the best")
    tu.add_argument("--trials", type=int, default=8, help="trials (trial 0 is the configured defaults)")
    tu.add_argument("--data-root", help="dataset root URI (default: <workspace>/data; simulated when empty)")
    tu.add_argument("--features", help=argparse.SUPPRESS)  # the RayJob's form: staged features on S3
    tu.add_argument("--config-uri", help=argparse.SUPPRESS)
    tu.add_argument("--out", help=argparse.SUPPRESS)
    tu.set_defaults(func=cmd_tune)
