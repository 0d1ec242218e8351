"""Evaluate: the candidate against the baselines and the current champion; a verdict and a report."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from components.core.config import Config
from components.evaluate.baselines import BASELINES, fit_baselines
from components.evaluate.evaluation import evaluate, write_report
from components.learn import tracking
from components.learn.bundle import Predictor
from components.learn.features import SPLIT_FILE, TEST, TRAIN_FRAME, VAL_FRAME
from components.steps import guarded, record
from components.steps.outcomes import Evaluated

log = logging.getLogger(__name__)


def dashboard_mae_metric(model: str) -> str:
    """The KFP Metrics key of ``model``'s test MAE: the evaluate op writes it, the deploy op reads the candidate's."""
    return f"{model}_mae_s"


def load_champion(cfg: Config) -> Predictor | None:
    version = tracking.alias_version(cfg, tracking.CHAMPION)
    if version is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = tracking.download_model(f"models:/{tracking.model_name(cfg)}@{tracking.CHAMPION}", tmp)
        predictor = Predictor.load(path)
    predictor.metadata["model_version"] = version
    return predictor


def evaluate_step(cfg: Config, features_dir: str | Path, bundle_dir: str | Path, out_dir: str | Path,
                  run_id: str | None = None, run_uri: str | None = None) -> Evaluated:
    with guarded("evaluate", run_uri, tracking.tracking_uri(cfg)):
        return _evaluate_step(cfg, features_dir, bundle_dir, out_dir, run_id, run_uri)


def _evaluate_step(cfg: Config, features_dir: str | Path, bundle_dir: str | Path, out_dir: str | Path,
                   run_id: str | None = None, run_uri: str | None = None) -> Evaluated:
    features_dir, out = Path(features_dir), Path(out_dir)
    tracking.setup(cfg)
    test = pd.read_parquet(features_dir / TEST)
    split = json.loads((features_dir / SPLIT_FILE).read_text())
    champion = load_champion(cfg)
    baselines = fit_baselines(pd.read_parquet(features_dir / TRAIN_FRAME), pd.read_parquet(features_dir / VAL_FRAME))
    ev = evaluate(test, Predictor.load(bundle_dir), baselines, champion, set(split["train_areas"]), cfg.eval,
                  context={"weeks": split["weeks"]})
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(ev.to_dict(), indent=2))
    (out / "verdict.json").write_text(json.dumps(ev.verdict, indent=2))
    report = write_report(
        ev, out, title=f"Evaluation on held-out weeks {split['weeks']['test'][0]} .. {split['weeks']['test'][-1]}"
    )
    if run_id:
        with tracking.start_run(run_id=run_id):
            for k in ("candidate", *BASELINES, "champion"):
                if ev.metrics[k]:
                    mlflow.log_metrics({tracking.test_metric(k, m): v for m, v in ev.metrics[k].items() if m != "n"})
                    mlflow.log_metrics({tracking.test_metric(k, m): ev.route_kpi[k][m]
                                        for m in ("delay_std_s", "delay_mean_s", "late_share", "early_share")})
            if ev.intervals.get("coverage") is not None:
                mlflow.log_metrics({tracking.test_metric("interval", "coverage"): ev.intervals["coverage"],
                                    tracking.test_metric("interval", "mean_width_s"): ev.intervals["mean_width_s"]})
            mlflow.log_metrics({tracking.test_metric(g, "bias_gap_s"): f["bias_gap_s"] for g, f in ev.fairness.items()})
            mlflow.set_tag(tracking.BLESSED_TAG, str(ev.verdict["blessed"]).lower())
            mlflow.log_artifacts(str(out), "evaluation")
    for reason in ev.verdict["reasons"]:
        log.info("%s", reason)
    return record(run_uri, Evaluated(
        blessed=ev.verdict["blessed"], reasons=ev.verdict["reasons"], metrics=ev.metrics, route_kpi=dict(ev.route_kpi),
        champion_version=champion.version if champion else None, report=str(report), importance=ev.importance,
        intervals={k: v for k, v in ev.intervals.items() if k != "by_window"}, fairness=ev.fairness,
        windows={w: {"weeks": d["weeks"], "metrics": d["metrics"], "route_kpi": d["route_kpi"]}
                 for w, d in ev.windows.items()},
        champion_test=ev.champion_test))
