"""The model server's service-level objectives and the Prometheus alert rules that watch them,
written from ``components.serving.metric_names`` (the names the server registers)."""

from __future__ import annotations

import yaml

from components.serving import metric_names as m

JOB = f'job="{m.SCRAPE_JOB}"'
PREDICT = f'{m.LABEL_ENDPOINT}=~".*predict.*"'  # the scoring endpoint(s), not probes or /metrics

# Alert thresholds: the service-level objectives of the model server.
P99_LATENCY_S = 0.5
ERROR_RATIO = 0.05
FALLBACK_RATIO = 0.05
PSI_THRESHOLD = 0.2  # PSI above 0.2 is the usual "significant shift"
# Labels arrive a week late and retraining runs every four weeks: the served model's data is one to
# five weeks older than the stops it plans; six weeks means a retraining was missed.
STALE_DATA_DAYS = 42
# The customer history is rebuilt with every validated weekly batch: two weeks behind means a refresh was missed.
STALE_HISTORY_DAYS = 14
# Online quality (servicetime monitor: served predictions joined with the labels that arrived).
ONLINE_SLICE_BIAS_S = 20.0  # a slice's mean error this far from zero: the model is off for those stops
ONLINE_COVERAGE_GAP = 0.05  # coverage this far below the interval's nominal level
STALE_ONLINE_REPORT_DAYS = 8  # weekly labels: a report older than a week and a day means the job stopped


def _rate(metric: str, selector: str, window: str = "5m") -> str:
    return f"rate({metric}{{{selector}}}[{window}])"


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
            f'PSI is {{{{ $value | printf "%.2f" }}}} (threshold {PSI_THRESHOLD}); consider retraining.',
        ),
        _alert(
            "ServicetimeStaleModel",
            f"max({m.MODEL_DATA_AGE}{{{JOB}}}) > {STALE_DATA_DAYS} * 86400",
            "1h",
            "warning",
            "The served model's data is old",
            f"The stops served lie {{{{ $value | humanizeDuration }}}} after the newest stop the model learned from "
            f"(limit {STALE_DATA_DAYS} days): retraining has stopped.",
        ),
        _alert(
            "ServicetimeStaleHistory",
            f"max({m.HISTORY_DATA_AGE}{{{JOB}}}) > {STALE_HISTORY_DAYS} * 86400",
            "1h",
            "warning",
            "The served customer history is old",
            f"The stops served lie {{{{ $value | humanizeDuration }}}} after the newest stop in the customer history "
            f"the server answers with (limit {STALE_HISTORY_DAYS} days): the snapshot is no longer refreshed.",
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
            'Served predictions against the labels that arrived are off by {{ $value | printf "%.0f" }} s '
            f"on average for this slice (limit {ONLINE_SLICE_BIAS_S:.0f} s); retrain or check the feed.",
        ),
        _alert(
            "ServicetimeOnlineCoverageLow",
            f"max({m.ONLINE_NOMINAL_COVERAGE}{{{JOB}}}) "
            f'- max({m.ONLINE_COVERAGE}{{{JOB},{m.LABEL_SLICE}="{m.SLICE_ALL}"}}) '
            f"> {ONLINE_COVERAGE_GAP}",
            "1h",
            "warning",
            "Served intervals cover fewer labels than promised",
            f"Online coverage is {{{{ $value | humanizePercentage }}}} below the nominal level "
            f"(limit {ONLINE_COVERAGE_GAP:.0%}).",
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
