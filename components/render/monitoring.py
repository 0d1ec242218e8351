"""Prometheus config, alert rules (``alerts``) and the Grafana dashboard (``dashboard``), from metric_names.

One source: the model server registers its metrics from
``components.serving.metric_names`` and everything that reads them is rendered
here. The cluster copies live in ``k8s/base/monitoring/`` (committed, checked
against a fresh render by the tests); the local stack renders its own with
static targets.

    python -m components.render.monitoring          # rewrite k8s/base/monitoring/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from components.core.platform import platform
from components.render.alerts import alert_rules as alert_rules
from components.render.alerts import render_alert_rules
from components.render.dashboard import render_dashboard
from components.serving import metric_names as m

MONITORING = Path("k8s") / "base" / "monitoring"  # under the checkout
CLUSTER_RULES_FILE = "/etc/prometheus/alerts.yml"  # where the ConfigMap is mounted

SCRAPE_INTERVAL = "15s"


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


# --- Grafana -------------------------------------------------------------------

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
