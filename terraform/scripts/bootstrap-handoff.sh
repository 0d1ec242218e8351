#!/usr/bin/env bash
# Runs once per node from cloud-init after k3s-node.sh; does nothing on agents.
# On the control plane: give cc a kubeconfig, wait until every node is Ready,
# clone (or update) the repository and hand off to the platform bootstrap if
# it exists. Every step is safe to repeat, and so is infra/bootstrap.sh.
#
#   servicetime-bootstrap [ENV_FILE]            run here (cloud-init does this)
#   servicetime-bootstrap --detach [ENV_FILE]   run again in a systemd unit that
#       outlives the SSH session, follow its log, exit with its status; a
#       second call while one runs follows that one (terraform output
#       bootstrap_command). SERVICETIME_EXPECTED_NODES overrides the node
#       count of the first boot (nodes added since), and
#       SERVICETIME_PREBUILT_IMAGE, when set (even empty), the prebuilt image.
# Output goes to /var/log/servicetime-bootstrap.log as well.
set -euo pipefail

# SERVICETIME_ROOT moves every system path into a sandbox (the tests).
ROOT="${SERVICETIME_ROOT:-}"
LOG="$ROOT/var/log/servicetime-bootstrap.log"
STATUS="$ROOT/run/servicetime-bootstrap.status"
LOCK="$ROOT/run/servicetime-bootstrap.lock"
UNIT=servicetime-bootstrap

detach=false
if [ "${1:-}" = --detach ]; then
  detach=true
  shift
fi
ENV_FILE="${1:-$ROOT/etc/servicetime/cluster.env}"
nodes_now="${SERVICETIME_EXPECTED_NODES:-}"
image_now="${SERVICETIME_PREBUILT_IMAGE-unset}"
# shellcheck source=/dev/null
. "$ENV_FILE"
[ "${K3S_ROLE:-}" = server ] || exit 0
EXPECTED_NODES="${nodes_now:-${EXPECTED_NODES:-}}"
# Today's terraform.tfvars (bootstrap_command) wins over the first boot's.
if [ "$image_now" != unset ]; then PREBUILT_IMAGE="$image_now"; fi
PREBUILT_IMAGE="${PREBUILT_IMAGE:-}"
: "${EXPECTED_NODES:?}" "${SERVER_IP:?}" "${REPO_URL:?}" "${REPO_REF:?}" "${K3S_JOIN_TOKEN:?}"

log() { echo "servicetime-bootstrap: $*"; }

[ "$(id -u)" = 0 ] || { log "run me as root (sudo)"; exit 1; }

# A bootstrap runs while the unit is active or someone holds the lock (the
# first one runs under cloud-init, outside the unit).
running() { systemctl is-active --quiet "$UNIT" || ! flock -n "$LOCK" true; }

if $detach; then
  start=1
  if [ -f "$LOG" ]; then start=$(($(wc -l <"$LOG") + 1)); fi
  if running; then
    log "a bootstrap is already running; following it"
  else
    rm -f "$STATUS"
    systemd-run --quiet --unit="$UNIT" --collect \
      --setenv=SERVICETIME_EXPECTED_NODES="$EXPECTED_NODES" \
      --setenv=SERVICETIME_PREBUILT_IMAGE="$PREBUILT_IMAGE" "$(readlink -f "$0")" "$ENV_FILE"
  fi
  touch "$LOG"
  tail -n "+$start" -F "$LOG" &
  follower=$!
  while running; do sleep 2; done
  sleep 1
  kill "$follower" 2>/dev/null || true
  rc="$(cat "$STATUS" 2>/dev/null || echo unknown)"
  if [ "$rc" = 0 ]; then
    log "finished"
    exit 0
  fi
  log "failed (status $rc); the whole log: sudo less $LOG"
  exit 1
fi

# One bootstrap at a time.
exec 9>"$LOCK"
flock -n 9 || { log "another bootstrap is running; not starting a second one"; exit 1; }

# Everything below also lands in $LOG; the status file tells a --detach
# follower how it ended (written after the log is complete).
exec > >(tee -a "$LOG") 2>&1
tee_pid=$!
finish() {
  local rc=$?
  log "exit status $rc"
  exec >&- 2>&-
  wait "$tee_pid" 2>/dev/null || true
  echo "$rc" >"$STATUS"
}
trap finish EXIT
log "started $(date -u '+%Y-%m-%d %H:%M:%S') UTC, expecting $EXPECTED_NODES node(s)"

export KUBECONFIG="$ROOT/etc/rancher/k3s/k3s.yaml"
for _ in $(seq 1 60); do
  [ -s "$KUBECONFIG" ] && break
  sleep 5
done
install -d -m 0700 -o cc -g cc "$ROOT/home/cc/.kube"
install -m 0600 -o cc -g cc "$KUBECONFIG" "$ROOT/home/cc/.kube/config"

ready_nodes() { kubectl get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l; }
# The agents' join token (terraform/instances.tf) exists only while nodes are missing: created
# here (a re-run with more nodes opens it again), deleted once all are Ready or the wait ends.
join_id="${K3S_JOIN_TOKEN%%.*}"
close_join() { k3s token delete "$join_id" >/dev/null 2>&1 || true; }
if [ "$(ready_nodes)" -lt "$EXPECTED_NODES" ]; then
  for _ in $(seq 1 30); do  # the API may still be starting
    if k3s token create "$K3S_JOIN_TOKEN" --ttl 2h \
      --description "servicetime agents' join, deleted once all nodes are Ready" >/dev/null 2>&1 ||
      k3s token list 2>/dev/null | grep -q "^$join_id "; then
      log "join token $join_id open for $EXPECTED_NODES node(s) (2 h at most)"
      break
    fi
    sleep 5
  done
fi
deadline=$((SECONDS + 1800))
until [ "$(ready_nodes)" -ge "$EXPECTED_NODES" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "only $(ready_nodes)/$EXPECTED_NODES nodes Ready after 30 min; continuing (the join token is closed:" \
      "run bootstrap_command again once the missing nodes are up)"
    break
  fi
  sleep 10
done
close_join
log "join token $join_id deleted: the token in the nodes' user-data opens nothing now"
kubectl get nodes -o wide || true

repo_dir="$ROOT/home/cc/servicetime"
if [ -d "$repo_dir/.git" ]; then
  sudo -u cc -H git -C "$repo_dir" pull --ff-only
else
  sudo -u cc -H git clone --branch "$REPO_REF" "$REPO_URL" "$repo_dir"
fi

cd "$repo_dir"
if [ -x infra/bootstrap.sh ]; then
  # The platform's facts (namespace, image, ports) come from this checkout's
  # components/core/platform.yaml, not from the user-data of the first boot.
  log "handing off to infra/bootstrap.sh"
  boot_env=(KUBECONFIG="$ROOT/home/cc/.kube/config" SERVICETIME_SERVER_IP="$SERVER_IP")
  # A prebuilt component image is copied into the registry instead of built.
  if [ -n "$PREBUILT_IMAGE" ]; then
    log "using the prebuilt image $PREBUILT_IMAGE"
    boot_env+=(PREBUILT_IMAGE="$PREBUILT_IMAGE")
  fi
  # (without the lock's descriptor: a process it leaves behind must not hold it)
  sudo -u cc -H env "${boot_env[@]}" infra/bootstrap.sh 9>&-
else
  log "no executable infra/bootstrap.sh in $REPO_URL@$REPO_REF; k3s is ready, the platform is not installed"
fi
