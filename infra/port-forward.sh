#!/usr/bin/env bash
# Keeps kubectl port-forwards to every UI open on 127.0.0.1 of the control-plane
# node, so one SSH tunnel from a laptop reaches them all. Run by the systemd unit
# that infra/bootstrap.sh installs; each forward restarts when its pod changes.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
export KUBECONFIG="${KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}"

# shellcheck source=infra/platform.sh
source "$REPO_ROOT/infra/platform.sh"

NS="$(platform namespace)"
forward() {  # namespace service local-port remote-port
  while true; do
    kubectl -n "$1" port-forward --address 127.0.0.1 "svc/$2" "$3:$4" >/dev/null 2>&1 || true
    sleep 2
  done
}

forward "$NS" mlflow "$(platform ports.mlflow)" "$(platform ports.mlflow)" &
forward "$NS" grafana "$(platform ports.grafana)" "$(platform ports.grafana)" &
forward "$NS" prometheus "$(platform ports.prometheus)" "$(platform ports.prometheus)" &
forward "$NS" minio "$(platform ports.s3)" "$(platform ports.s3)" &
forward "$NS" minio "$(platform ports.s3_console)" "$(platform ports.s3_console)" &
forward "$NS" model-server "$(platform ports.model_server)" "$(platform ports.model_server)" &
forward kubeflow ml-pipeline-ui "$(platform ports.kfp_ui)" 80 &
wait
