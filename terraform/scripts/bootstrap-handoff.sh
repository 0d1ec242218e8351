#!/usr/bin/env bash
# Runs once per node from cloud-init after k3s-node.sh; does nothing on agents.
# On the control plane: give cc a kubeconfig, wait until every node is Ready,
# clone the repository and hand off to the platform bootstrap if it exists.
set -euo pipefail

ENV_FILE="${1:-/etc/servicetime/cluster.env}"
# shellcheck source=/dev/null
. "$ENV_FILE"
[ "${K3S_ROLE:-}" = server ] || exit 0
: "${EXPECTED_NODES:?}" "${SERVER_IP:?}" "${REPO_URL:?}" "${REPO_REF:?}"

log() { echo "servicetime-bootstrap: $*"; }

export KUBECONFIG=/etc/rancher/k3s/k3s.yaml
for _ in $(seq 1 60); do
  [ -s "$KUBECONFIG" ] && break
  sleep 5
done
install -d -m 0700 -o cc -g cc /home/cc/.kube
install -m 0600 -o cc -g cc "$KUBECONFIG" /home/cc/.kube/config

ready_nodes() { kubectl get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l; }
deadline=$((SECONDS + 1800))
until [ "$(ready_nodes)" -ge "$EXPECTED_NODES" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "only $(ready_nodes)/$EXPECTED_NODES nodes Ready after 30 min; continuing"
    break
  fi
  sleep 10
done
kubectl get nodes -o wide || true

repo_dir=/home/cc/servicetime
if [ -d "$repo_dir/.git" ]; then
  sudo -u cc -H git -C "$repo_dir" pull --ff-only
else
  sudo -u cc -H git clone --branch "$REPO_REF" "$REPO_URL" "$repo_dir"
fi

cd "$repo_dir"
if [ -x infra/bootstrap.sh ]; then
  log "handing off to infra/bootstrap.sh"
  sudo -u cc -H env KUBECONFIG=/home/cc/.kube/config \
    SERVICETIME_SERVER_IP="$SERVER_IP" SERVICETIME_NAMESPACE="${NAMESPACE:-}" \
    SERVICETIME_IMAGE="${IMAGE:-}" infra/bootstrap.sh
else
  log "no executable infra/bootstrap.sh in $REPO_URL@$REPO_REF; k3s is ready, the platform is not installed"
fi
