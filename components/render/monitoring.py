"""Prometheus config, alert rules and the Grafana dashboard, rendered from metric_names.

One source: the model server registers its metrics from
``components.serving.metric_names`` and everything that reads them is rendered
here. The cluster copies live in ``k8s/base/monitoring/`` (committed, checked
against a fresh render by the tests); the local stack renders its own with
static targets.

    python -m components.render.monitoring          # rewrite k8s/base/monitoring/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from components.core.platform import platform
from components.serving import metric_names as m

MONITORING = Path("k8s") / "base" / "monitoring"  # under the checkout
CLUSTER_RULES_FILE = "/etc/prometheus/alerts.yml"  # where the ConfigMap is mounted

SCRAPE_INTERVAL = "15s"
JOB = f'job="{m.SCRAPE_JOB}"'
PREDICT = f'{m.LABEL_ENDPOINT}=~".*predict.*"'  # the scoring endpoint(s), not probes or /metrics

# Alert thresholds: the service-level objectives of the model server.
P99_LATENCY_S = 0.5
ERROR_RATIO = 0.05
FALLBACK_RATIO = 0.05
PSI_THRESHOLD = 0.2  # PSI above 0.2 is the usual "significant shift"
STALE_MODEL_DAYS = 14  # weekly batches: two missed retrains
# Online quality (servicetime monitor: served predictions joined with the labels that arrived).
ONLINE_SLICE_BIAS_S = 20.0  # a slice's mean error this far from zero: the model is off for those stops
ONLINE_COVERAGE_GAP = 0.05  # coverage this far below the interval's nominal level
STALE_ONLINE_REPORT_DAYS = 8  # weekly labels: a report older than a week and a day means the job stopped


def _rate(metric: str, selector: str, window: str = "5m") -> str:
    return f"rate({metric}{{{selector}}}[{window}])"


def render_prometheus_config(targets: list[str], rules_files: list[str], kubernetes_sd: bool) -> str:
    """prometheus.yml: pod discovery by annotation on the cluster, static targets locally."""
    job: dict = {"job_name": m.SCRAPE_JOB, "scrape_interval": SCRAPE_INTERVAL}
    if kubernetes_sd:
        meta = "__meta_kubernetes_pod_"
        job["kubernetes_sd_configs"] = [{"role": "pod", "namespaces": {"names": [platform().namespace]}}]
        job["relabel_configs"] = [
            # Opt-in by annotation, and only model-server pods belong to this job.
            {"source_labels": [f"{meta}annotation_prometheus_io_scrape"], "action": "keep", "regex": "true"},
            {"source_labels": [f"{meta}label_app_kubernetes_io_name"], "action": "keep", "regex": "model-server"},
            {
                "source_labels": [f"{meta}annotation_prometheus_io_path"],
                "action": "replace",
                "regex": "(.+)",
                "target_label": "__metrics_path__",
            },
            {
                "source_labels": ["__address__", f"{meta}annotation_prometheus_io_port"],
                "action": "replace",
                "regex": r"([^:]+)(?::\d+)?;(\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": [f"{meta}name"], "target_label": "pod"},
            # stable | canary: the rollout compares them by this label.
            {"source_labels": [f"{meta}label_servicetime_io_track"], "target_label": "track"},
        ]
    else:
        job["static_configs"] = [{"targets": list(targets), "labels": {"track": "stable"}}]
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": list(rules_files),
        "scrape_configs": [
            job,
            {"job_name": "prometheus", "static_configs": [{"targets": [f"localhost:{platform().ports.prometheus}"]}]},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, "service": m.SCRAPE_JOB},
        "annotations": {"summary": summary, "description": description},
    }


def alert_rules() -> list[dict]:
    # Only /predict counts: /readyz answers 503 by design while no model is loaded.
    server_errors = f'{JOB},{PREDICT},{m.LABEL_STATUS}=~"5.."'
    fallback = f'{JOB},{m.LABEL_SOURCE}="fallback"'
    requests = f"sum({_rate(f'{m.REQUESTS}_total', f'{JOB},{PREDICT}')})"
    errors = f"sum({_rate(f'{m.REQUESTS}_total', server_errors)})"
    predictions = f"sum({_rate(f'{m.PREDICTIONS}_total', JOB)})"
    fallbacks = f"sum({_rate(f'{m.PREDICTIONS}_total', fallback)})"
    p99 = f"histogram_quantile(0.99, sum by (le) ({_rate(f'{m.REQUEST_LATENCY}_bucket', f'{JOB},{PREDICT}')}))"
    return [
        _alert(
            "ServicetimeHighP99Latency",
            f"{p99} > {P99_LATENCY_S}",
            "10m",
            "warning",
            "Model server p99 latency is high",
            f"p99 of /predict over 5m is {{{{ $value | humanizeDuration }}}} (objective {P99_LATENCY_S}s).",
        ),
        _alert(
            "ServicetimeHighErrorRatio",
            f"({errors}) / ({requests}) > {ERROR_RATIO}",
            "5m",
            "critical",
            "Model server returns 5xx on /predict",
            f"{{{{ $value | humanizePercentage }}}} of requests failed over 5m (objective {ERROR_RATIO:.0%}).",
        ),
        _alert(
            "ServicetimeFallbackActive",
            f"({fallbacks}) / ({predictions}) > {FALLBACK_RATIO}",
            "10m",
            "warning",
            "Predictions come from the business-logic fallback",
            "{{ $value | humanizePercentage }} of predictions over 5m used the fallback; "
            f"see {m.FALLBACKS}_total by {m.LABEL_REASON}.",
        ),
        _alert(
            "ServicetimeInputDrift",
            f"max by ({m.LABEL_FEATURE}) ({m.INPUT_DRIFT_PSI}{{{JOB}}}) > {PSI_THRESHOLD}",
            "30m",
            "warning",
            "Input drift on {{ $labels." + m.LABEL_FEATURE + " }}",
            f"PSI is {{{{ $value | printf \"%.2f\" }}}} (threshold {PSI_THRESHOLD}); consider retraining.",
        ),
        _alert(
            "ServicetimeStaleModel",
            f"time() - max({m.MODEL_LOADED_TIMESTAMP}{{{JOB}}}) > {STALE_MODEL_DAYS} * 86400",
            "1h",
            "warning",
            "The served model is old",
            f"The model was loaded {{{{ $value | humanizeDuration }}}} ago (limit {STALE_MODEL_DAYS} days).",
        ),
        _alert(
            "ServicetimeModelNotLoaded",
            f"max by (pod) ({m.MODEL_LOADED}{{{JOB}}}) < 1",
            "5m",
            "critical",
            "A model server has no model loaded",
            "Pod {{ $labels.pod }} serves fallback answers only; check its log and the MLflow alias.",
        ),
        _alert(
            "ServicetimeOnlineSliceBias",
            f"max by ({m.LABEL_SLICE}) (abs({m.ONLINE_BIAS}{{{JOB}}})) > {ONLINE_SLICE_BIAS_S}",
            "1h",
            "warning",
            "Online bias on {{ $labels." + m.LABEL_SLICE + " }}",
            "Served predictions against the labels that arrived are off by {{ $value | printf \"%.0f\" }} s "
            f"on average for this slice (limit {ONLINE_SLICE_BIAS_S:.0f} s); retrain or check the feed.",
        ),
        _alert(
            "ServicetimeOnlineCoverageLow",
            f'max({m.ONLINE_NOMINAL_COVERAGE}{{{JOB}}}) - max({m.ONLINE_COVERAGE}{{{JOB},{m.LABEL_SLICE}="{m.SLICE_ALL}"}}) '
            f"> {ONLINE_COVERAGE_GAP}",
            "1h",
            "warning",
            "Served intervals cover fewer labels than promised",
            f"Online coverage is {{{{ $value | humanizePercentage }}}} below the nominal level (limit {ONLINE_COVERAGE_GAP:.0%}).",
        ),
        _alert(
            "ServicetimeOnlineReportStale",
            f"time() - max({m.ONLINE_REPORT_TIMESTAMP}{{{JOB}}}) > {STALE_ONLINE_REPORT_DAYS} * 86400",
            "1h",
            "warning",
            "No fresh online-quality report",
            f"The latest `servicetime monitor` report is {{{{ $value | humanizeDuration }}}} old "
            f"(limit {STALE_ONLINE_REPORT_DAYS} days): the labels join has stopped.",
        ),
        _alert(
            "ServicetimeScrapeDown",
            f"up{{{JOB}}} == 0",
            "5m",
            "critical",
            "Prometheus cannot scrape a model server",
            "Target {{ $labels.instance }} has been down for 5 minutes.",
        ),
    ]


def render_alert_rules() -> str:
    return yaml.safe_dump({"groups": [{"name": "servicetime", "rules": alert_rules()}]}, sort_keys=False)


# --- Grafana -------------------------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # see k8s/base/grafana/datasources.yaml


def _panel(pid: int, title: str, kind: str, grid: tuple[int, int, int, int], targets: list[tuple[str, str]], **extra) -> dict:
    x, y, w, h = grid
    panel = {
        "id": pid,
        "title": title,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    panel.update(extra)
    return panel


def _unit(unit: str) -> dict:
    return {"fieldConfig": {"defaults": {"unit": unit}, "overrides": []}}


def render_dashboard() -> str:
    """The model server dashboard as Grafana JSON (provisioned, not edited by hand)."""
    job = JOB
    w = "$__rate_interval"
    latency = lambda q: (  # noqa: E731
        f"histogram_quantile({q}, sum by (le) (rate({m.REQUEST_LATENCY}_bucket{{{job},{PREDICT}}}[{w}])))"
    )
    panels = [
        _panel(
            1, "Requests by status", "timeseries", (0, 0, 12, 8),
            [(f"sum by ({m.LABEL_STATUS}) (rate({m.REQUESTS}_total{{{job}}}[{w}]))", f"{{{{{m.LABEL_STATUS}}}}}")],
            **_unit("reqps"),
        ),
        _panel(
            2, "Latency of /predict", "timeseries", (12, 0, 12, 8),
            [(latency(0.5), "p50"), (latency(0.99), "p99")],
            **_unit("s"),
        ),
        _panel(
            3, "Fallback rate", "timeseries", (0, 8, 12, 8),
            [
                (
                    f'sum(rate({m.PREDICTIONS}_total{{{job},{m.LABEL_SOURCE}="fallback"}}[{w}])) '
                    f"/ sum(rate({m.PREDICTIONS}_total{{{job}}}[{w}]))",
                    "fallback share",
                ),
                (f"sum by ({m.LABEL_REASON}) (rate({m.FALLBACKS}_total{{{job}}}[{w}]))", f"{{{{{m.LABEL_REASON}}}}}"),
            ],
            **_unit("percentunit"),
        ),
        _panel(
            4, "Predicted service time", "heatmap", (12, 8, 12, 8),
            [(f"sum by (le) (increase({m.PREDICTED_SERVICE_TIME}_bucket{{{job}}}[{w}]))", "{{le}}")],
            options={"calculate": False, "yAxis": {"unit": "s"}},
        ),
        _panel(
            5, "Input drift (PSI) by feature", "timeseries", (0, 16, 12, 8),
            [(f"max by ({m.LABEL_FEATURE}) ({m.INPUT_DRIFT_PSI}{{{job}}})", f"{{{{{m.LABEL_FEATURE}}}}}")],
            fieldConfig={
                "defaults": {
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [{"color": "green", "value": None}, {"color": "red", "value": PSI_THRESHOLD}],
                    },
                    "custom": {"thresholdsStyle": {"mode": "line"}},
                },
                "overrides": [],
            },
        ),
        _panel(
            6, "Model", "table", (12, 16, 12, 8),
            [
                (f"max by (pod, track, name, version, alias) ({m.MODEL_INFO}{{{job}}})", ""),
                (f"max by (pod) (time() - {m.MODEL_LOADED_TIMESTAMP}{{{job}}})", "age"),
                (f"max by (pod) ({m.MODEL_LOADED}{{{job}}})", "loaded"),
            ],
            options={"showHeader": True},
            transformations=[{"id": "merge", "options": {}}],
        ),
    ]
    online = f"max by ({m.LABEL_SLICE}) (%s{{{job}}})"
    panels += [
        _panel(
            7, "Online MAE by slice (served vs arrived labels)", "timeseries", (0, 24, 12, 8),
            [(online % m.ONLINE_MAE, f"{{{{{m.LABEL_SLICE}}}}}")], **_unit("s"),
        ),
        _panel(
            8, "Online bias by slice (prediction - actual)", "timeseries", (12, 24, 12, 8),
            [(online % m.ONLINE_BIAS, f"{{{{{m.LABEL_SLICE}}}}}")],
            fieldConfig={"defaults": {"unit": "s", "custom": {"thresholdsStyle": {"mode": "line"}}, "thresholds": {
                "mode": "absolute", "steps": [{"color": "green", "value": None},
                                              {"color": "red", "value": ONLINE_SLICE_BIAS_S}]}}, "overrides": []},
        ),
        _panel(
            9, "Online interval coverage and late share", "timeseries", (0, 32, 12, 8),
            [(online % m.ONLINE_COVERAGE, f"coverage {{{{{m.LABEL_SLICE}}}}}"),
             (f"max({m.ONLINE_NOMINAL_COVERAGE}{{{job}}})", "nominal"),
             (online % m.ONLINE_LATE_SHARE, f"late {{{{{m.LABEL_SLICE}}}}}")],
            **_unit("percentunit"),
        ),
        _panel(
            10, "Prediction log", "timeseries", (12, 32, 12, 8),
            [(f"sum(rate({m.PREDICTION_LOG_ROWS}_total{{{job}}}[{w}]))", "rows written/s"),
             (f"sum(rate({m.PREDICTION_LOG_DROPPED}_total{{{job}}}[{w}]))", "rows dropped/s"),
             (f'max({m.ONLINE_ROWS}{{{job},{m.LABEL_SLICE}="{m.SLICE_ALL}"}})', "joined rows (latest report)")],
        ),
    ]
    for target in panels[5]["targets"]:
        target.update({"format": "table", "instant": True})
    panels[3]["targets"][0]["format"] = "heatmap"
    dashboard = {
        "uid": "servicetime-model-server",
        "title": "servicetime: model server",
        "tags": ["servicetime"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "editable": False,
        "panels": panels,
    }
    return json.dumps(dashboard, indent=2) + "\n"


def cluster_files() -> dict[str, str]:
    """The files the kustomize base mounts (names match k8s/base/kustomization.yaml)."""
    return {
        "prometheus.yml": render_prometheus_config([], [CLUSTER_RULES_FILE], kubernetes_sd=True),
        "alerts.yml": render_alert_rules(),
        "dashboard.json": render_dashboard(),
    }


def write_cluster_files(dest: Path | None = None) -> list[Path]:
    """Write the cluster's monitoring files into ``dest`` (default: k8s/base/monitoring of the checkout)."""
    from components.render.checkout import find_checkout

    dest = dest or find_checkout() / MONITORING
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in cluster_files().items():
        (dest / name).write_text(text)
        paths.append(dest / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite the rendered monitoring files of the k8s base.")
    parser.add_argument("--dest", type=Path, default=None, help="default: k8s/base/monitoring of this checkout")
    args = parser.parse_args(argv)
    for path in write_cluster_files(args.dest):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
