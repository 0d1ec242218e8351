"""The model server's Grafana dashboard (provisioned, not edited by hand), its queries written from
``components.serving.metric_names`` and the thresholds of ``components.render.alerts``."""

from __future__ import annotations

import json

from components.render.alerts import JOB, ONLINE_SLICE_BIAS_S, PREDICT, PSI_THRESHOLD
from components.serving import metric_names as m

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # see k8s/base/grafana/datasources.yaml


def _panel(
    pid: int, title: str, kind: str, grid: tuple[int, int, int, int], targets: list[tuple[str, str]], **extra
) -> dict:
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
                (f"max by (pod) (time() - {m.MODEL_LOADED_TIMESTAMP}{{{job}}})", "loaded ago"),
                (f"max by (pod) ({m.MODEL_DATA_AGE}{{{job}}})", "data age"),
                (f"max by (pod) ({m.HISTORY_DATA_AGE}{{{job}}})", "history age"),
                (f"sum by (pod) (rate({m.HISTORY_FOUND}_total{{{job}}}[15m])) / "
                 f"sum by (pod) (rate({m.HISTORY_LOOKUPS}_total{{{job}}}[15m]))", "history hit rate"),
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
