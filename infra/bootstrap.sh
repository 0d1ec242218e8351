#!/usr/bin/env bash
# Install the servicetime platform on a k3s cluster (Chameleon, or any k3s/k3d:
# set KUBECONFIG, and NODE_LOCAL=0 where this machine is not the control plane).
# Run from a checkout of this repository; cloud-init calls it after
# `terraform apply`. Safe to run again, and the way to resume: every step checks
# before it changes anything, generated credentials are kept once created.
#
#   EXPECTED_NODES=3 infra/bootstrap.sh
#
# Steps: wait for the nodes; registry mirror on this node; a small venv; the
# pinned upstream trees (KFP, Argo, KubeRay) fetched once; Secrets; the whole
# install rendered offline by components.render.install (the same render the
# tests check) and applied, CRDs first; the UI port-forwards; the image built and
# pushed; then every Deployment waited for, each reported, none fatal alone.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OVERLAY="${OVERLAY:-chameleon}"
EXPECTED_NODES="${EXPECTED_NODES:-1}"
KUBECONFIG="${KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}"
VENV="${VENV:-$HOME/.cache/servicetime/bootstrap-venv}"
PYTHON="${PYTHON:-python3}"
NODE_LOCAL="${NODE_LOCAL:-1}"       # 0: not on the control plane (k3d, a laptop): no hosts, mirror, systemd
BUILD_IMAGE="${BUILD_IMAGE:-1}"     # 0: the image is already in the registry (or imported into k3d)
PREBUILT_IMAGE="${PREBUILT_IMAGE:-}" # a published image to copy into the registry instead of building
KFP_HOST="${KFP_HOST:-}"            # the KFP API for the upload (default: the port-forward on this node)
RECURRING_CRON="${RECURRING_CRON:-}" # e.g. "0 0 6 * * 1": also a weekly run of the uploaded version (off by default)
MONITOR_CRON="${MONITOR_CRON-0 0 7 * * 1}" # the labels join's weekly run (Monday 07:00); empty: none
APT_LOCK_TIMEOUT=600                # first boot: cloud-init and unattended-upgrades hold the dpkg lock
SLOW=()                             # components that did not become ready in time
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO="sudo"

log() { printf '\n==> %s\n' "$*"; }

# kubectl against this cluster; the k3s kubeconfig is root-only by default.
kc() {
  if [[ -r "$KUBECONFIG" ]]; then
    kubectl --kubeconfig "$KUBECONFIG" "$@"
  else
    $SUDO kubectl --kubeconfig "$KUBECONFIG" "$@"
  fi
}

# shellcheck source=infra/platform.sh
source "$REPO_ROOT/infra/platform.sh"

NS="$(platform namespace)"
KFP_NS="$(platform namespaces.kfp)"          # fixed by KFP's env/platform-agnostic
KUBERAY_NS="$(platform namespaces.kuberay)"  # rendered there by components/render/install.py
KFP_VERSION="$(platform versions.kfp)"
REGISTRY_HOST="$(platform image.repository)"
REGISTRY_HOST="${REGISTRY_HOST%%/*}"         # host:port of the registry
REGISTRY_NS="$NS-registry"                   # components/render/cluster.py: registry_namespace()
STATE_DIR="$(platform state.host_path)"      # platform state; a kept volume when Terraform attaches one
# The control plane's private address (passed by the cloud-init handoff).
SERVER_IP="${SERVICETIME_SERVER_IP:-$(hostname -I | awk '{print $1}')}"

wait_for_nodes() {
  log "waiting for $EXPECTED_NODES node(s) to be Ready"
  for _ in $(seq 1 120); do
    local ready
    ready="$(kc get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)"
    if (( ready >= EXPECTED_NODES )); then
      kc get nodes -o wide
      return 0
    fi
    sleep 10
  done
  echo "only ${ready:-0} of $EXPECTED_NODES nodes became Ready" >&2
  return 1
}

# The registry listens on the control plane's hostPort; every node pulls
# $REGISTRY_HOST through a containerd mirror to it, and host tools resolve the
# name to it. Terraform's cloud-init sets both up on every node; on a cluster
# made by hand, this makes sure the control plane at least has them.
configure_registry_mirror() {
  [[ "$NODE_LOCAL" == 1 ]] || return 0
  local name="${REGISTRY_HOST%%:*}" port="${REGISTRY_HOST##*:}"
  grep -qE "[[:space:]]${name//./\\.}([[:space:]]|\$)" /etc/hosts ||
    echo "$SERVER_IP $name" | $SUDO tee -a /etc/hosts >/dev/null
  local file=/etc/rancher/k3s/registries.yaml
  if $SUDO grep -q "$REGISTRY_HOST" "$file" 2>/dev/null; then
    return 0
  fi
  local entry
  entry="$(printf '  "%s":\n    endpoint:\n      - "http://%s:%s"\n' "$REGISTRY_HOST" "$SERVER_IP" "$port")"
  if $SUDO test -s "$file"; then
    printf 'WARNING: %s has no mirror for %s; add under mirrors: (on every node)\n%s\n' "$file" "$REGISTRY_HOST" "$entry" >&2
    return 0
  fi
  log "registry mirror $REGISTRY_HOST -> $SERVER_IP:$port (restarts k3s once; workers need it too)"
  printf 'mirrors:\n%s\n' "$entry" | $SUDO tee "$file" >/dev/null
  $SUDO systemctl restart k3s
  until kc get --raw /readyz >/dev/null 2>&1; do sleep 3; done
}

apt_install() {
  $SUDO apt-get -o DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT update -qq
  $SUDO DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT install -y -qq "$@" >/dev/null
}

# Stateful pods are pinned to the node holding the state folder: this one.
# Terraform labels it on first boot; clusters from before that, or made by
# hand, get the label here.
label_state_node() {
  [[ "$NODE_LOCAL" == 1 ]] || return 0
  local node
  node="$(kc get nodes -o name | grep -x "node/$(hostname)" || true)"
  if [[ -z "$node" ]]; then
    echo "WARNING: no node named $(hostname); label the control plane with $(platform state.node_label)=true" >&2
    return 0
  fi
  kc label "$node" "$(platform state.node_label)=true" --overwrite >/dev/null
}

# The render needs only PyYAML and pydantic, held to the project's lock. A venv
# left half-made by an interrupted run (no working pip) is made again.
venv_usable() { "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }

ensure_venv() {
  if [[ -e "$VENV" ]] && ! venv_usable; then
    log "removing a half-made venv: $VENV"
    rm -rf "$VENV"
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "python venv for rendering manifests: $VENV"
    python3 -m venv "$VENV" 2>/dev/null || {
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV"
    }
  fi
  local constraints=()
  [[ -f "$REPO_ROOT/requirements.lock" ]] && constraints=(-c "$REPO_ROOT/requirements.lock")
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${constraints[@]}" pyyaml 'pydantic>=2.10,<3'
}

# The pinned KFP, Argo and KubeRay trees, downloaded once into the cache
# (components/render/upstream.py); nothing is fetched by kustomize at apply time.
fetch_upstream() {
  log "pinned upstream manifests (KFP $KFP_VERSION, Argo $(platform versions.argo), KubeRay $(platform versions.kuberay))"
  UPSTREAM="$(cd "$REPO_ROOT" && "$VENV/bin/python" -c \
    'from components.render import upstream; print(upstream.locate(download=True))')"
  echo "trees in $UPSTREAM"
}

ensure_namespace() {
  kc get namespace "$1" >/dev/null 2>&1 || kc create namespace "$1"
}

# Random hex: URL-safe, so it can sit in connection strings. MinIO caps access
# keys at 20 characters and secret keys at 40.
rand() { openssl rand -hex "$1"; }

# ensure_secret NAMESPACE NAME KEY=VALUE...: created once, never overwritten.
# Credentials are kept beside the data they open (Postgres and MinIO are
# initialised with them): under the state folder, root-only, so a new cluster
# on the same kept volume gets the same ones back.
CREDENTIALS_DIR="${CREDENTIALS_DIR:-$STATE_DIR/credentials}"

# ensure_secret NAMESPACE NAME KEY=VALUE...: created once, never overwritten;
# restored from the kept copy when there is one, kept when made here.
ensure_secret() {
  local ns="$1" name="$2"
  shift 2
  kc -n "$ns" get secret "$name" >/dev/null 2>&1 && return 0
  local kept="$CREDENTIALS_DIR/$ns.$name.env"
  if [[ "$NODE_LOCAL" == 1 ]] && $SUDO test -s "$kept"; then
    $SUDO cat "$kept" | kc -n "$ns" create secret generic "$name" --from-env-file=/dev/stdin >/dev/null
    echo "restored secret $ns/$name from $kept"
    return 0
  fi
  local args=()
  for pair in "$@"; do args+=("--from-literal=$pair"); done
  kc -n "$ns" create secret generic "$name" "${args[@]}" >/dev/null
  if [[ "$NODE_LOCAL" == 1 ]]; then
    $SUDO install -d -m 0700 "$CREDENTIALS_DIR"
    printf '%s\n' "$@" | $SUDO tee "$kept" >/dev/null
    $SUDO chmod 0600 "$kept"
  fi
  echo "created secret $ns/$name"
}

secret_value() {
  kc -n "$1" get secret "$2" -o "jsonpath={.data.$3}" | base64 -d
}

create_secrets() {
  log "secrets (generated once; kept root-only in $CREDENTIALS_DIR with the data they open)"
  ensure_namespace "$NS"
  local s3_key s3_secret
  s3_key="st$(rand 8)"
  s3_secret="$(rand 16)"
  ensure_secret "$NS" minio-root "rootUser=admin$(rand 6)" "rootPassword=$(rand 16)"
  ensure_secret "$NS" s3-credentials \
    "AWS_ACCESS_KEY_ID=$s3_key" "AWS_SECRET_ACCESS_KEY=$s3_secret" \
    "accesskey=$s3_key" "secretkey=$s3_secret"
  ensure_secret "$NS" postgres-credentials \
    POSTGRES_USER=mlflow "POSTGRES_PASSWORD=$(rand 16)" POSTGRES_DB=mlflow
  ensure_secret "$NS" grafana-admin user=admin "password=$(rand 12)"
  # One S3 user per workload (components/cluster/s3_users.py sets what each may touch).
  ensure_secret "$NS" s3-mlflow "AWS_ACCESS_KEY_ID=st$(rand 8)" "AWS_SECRET_ACCESS_KEY=$(rand 16)"
  ensure_secret "$NS" s3-ray "AWS_ACCESS_KEY_ID=st$(rand 8)" "AWS_SECRET_ACCESS_KEY=$(rand 16)"
  ensure_secret "$NS" s3-model-server "AWS_ACCESS_KEY_ID=st$(rand 8)" "AWS_SECRET_ACCESS_KEY=$(rand 16)"
  # MLflow's basic-auth admin, which every client of ours logs in as; the model server's bearer token.
  ensure_secret "$NS" mlflow-auth MLFLOW_TRACKING_USERNAME=servicetime "MLFLOW_TRACKING_PASSWORD=$(rand 16)"
  ensure_secret "$NS" model-server-token "token=$(rand 24)"
  # The salt that turns real customer and driver ids into keys at ingest (components/core/keys.py). Kept
  # with the data: a new salt would make every customer new.
  ensure_secret "$NS" servicetime-key-salt "SERVICETIME_KEY_SALT=$(rand 32)"
}

# KFP's launcher, API server, Argo and pipeline pods read the same S3 user from
# the KFP namespace; keep that copy equal to ours on every run.
copy_s3_secret_to_kfp() {
  local key secret
  key="$(secret_value "$NS" s3-credentials AWS_ACCESS_KEY_ID)"
  secret="$(secret_value "$NS" s3-credentials AWS_SECRET_ACCESS_KEY)"
  kc -n "$KFP_NS" create secret generic s3-credentials \
    "--from-literal=AWS_ACCESS_KEY_ID=$key" "--from-literal=AWS_SECRET_ACCESS_KEY=$secret" \
    "--from-literal=accesskey=$key" "--from-literal=secretkey=$secret" \
    --dry-run=client -o yaml | kc apply -f - >/dev/null
  # Pipeline steps log to MLflow as the same user and hash real ids with the same salt (both read from
  # Secrets, never from the command line).
  local name
  for name in mlflow-auth servicetime-key-salt; do
    kc -n "$NS" get secret "$name" -o json \
      | "$VENV/bin/python" -c 'import json, sys; s = json.load(sys.stdin); m = s["metadata"]
print(json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": s["data"],
                  "metadata": {"name": m["name"], "namespace": sys.argv[1]}}))' "$KFP_NS" \
      | kc apply -f - >/dev/null
  done
}

# One render of everything (KFP, Argo, KubeRay, our overlay), applied in two
# passes: Namespaces and CRDs, then all of it once the CRDs are established.
apply_install() {
  log "rendering the install (overlay $OVERLAY) from $UPSTREAM"
  (cd "$REPO_ROOT" && "$VENV/bin/python" -m components.render.install --upstream "$UPSTREAM" \
    --overlay "$OVERLAY" --no-samples --out "$WORK/install.yaml" --crds-out "$WORK/crds.yaml")
  log "applying Namespaces, CRDs and the state folders' Job"
  # A Job's template is immutable; making the folders is idempotent, so run it anew.
  kc -n "$REGISTRY_NS" delete job state-folders --ignore-not-found >/dev/null 2>&1 || true
  # Server-side: the CRDs are too large for the last-applied annotation.
  kc apply --server-side --force-conflicts -f "$WORK/crds.yaml" >/dev/null
  kc wait --for condition=established --timeout=180s crd --all >/dev/null
  if ! kc -n "$REGISTRY_NS" wait --for=condition=complete job/state-folders --timeout=300s >/dev/null 2>&1; then
    echo "WARNING: the state folders are not made yet (kubectl -n $REGISTRY_NS logs job/state-folders);" \
      "stateful pods wait for them" >&2
    SLOW+=("$REGISTRY_NS/job/state-folders")
  fi
  copy_s3_secret_to_kfp
  # A Job's template is immutable; the setup Job is idempotent, so run it anew.
  kc -n "$NS" delete job minio-setup --ignore-not-found >/dev/null
  log "applying the install"
  kc apply --server-side --force-conflicts -f "$WORK/install.yaml" >/dev/null
}

# wait_ready NAMESPACE KIND/NAME TIMEOUT: report a slow component, do not abort.
wait_ready() {
  if ! kc -n "$1" rollout status "$2" --timeout="$3" >/dev/null 2>&1; then
    echo "WARNING: $1/$2 not ready after $3 (kubectl -n $1 describe $2)" >&2
    SLOW+=("$1/$2")
    return 0
  fi
  echo "ready: $1/$2"
}

wait_for_platform() {
  log "waiting for the platform"
  wait_ready "$REGISTRY_NS" deployment/registry 600s
  for deployment in minio postgres prometheus grafana mlflow model-server; do
    wait_ready "$NS" "deployment/$deployment" 600s
  done
  if ! kc -n "$NS" wait --for=condition=complete job/minio-setup --timeout=600s >/dev/null 2>&1; then
    echo "WARNING: $NS/job/minio-setup did not complete (kubectl -n $NS logs job/minio-setup)" >&2
    SLOW+=("$NS/job/minio-setup")
  fi
  wait_ready "$KUBERAY_NS" deployment/kuberay-operator 600s
}

# PREBUILT_IMAGE=<ref>: copy a published image into the registry under the
# platform tag instead of building (minutes instead of a quarter hour).
copy_prebuilt_image() {
  local ref
  ref="$(platform image.repository):$(platform image.tag)"
  log "image: $PREBUILT_IMAGE -> $ref (prebuilt, not built here)"
  $SUDO k3s ctr images pull "$PREBUILT_IMAGE" >/dev/null
  $SUDO k3s ctr images tag --force "$PREBUILT_IMAGE" "$ref" >/dev/null
  $SUDO k3s ctr images push --plain-http "$ref" >/dev/null
  kc -n "$NS" rollout restart deployment/mlflow deployment/model-server >/dev/null
}

build_image() {
  if [[ -n "$PREBUILT_IMAGE" ]]; then
    copy_prebuilt_image
    return 0
  fi
  if [[ "$BUILD_IMAGE" != 1 ]]; then
    log "image: not built here (BUILD_IMAGE=$BUILD_IMAGE)"
    return 0
  fi
  log "image"
  "$REPO_ROOT/infra/build_image.sh"
  # Pods that tried before the push are in image-pull back-off; start them over.
  kc -n "$NS" rollout restart deployment/mlflow deployment/model-server >/dev/null
}

wait_for_kfp() {
  log "waiting for KFP (first start pulls large images)"
  local deployment
  for deployment in $(kc -n "$KFP_NS" get deployments -o name); do
    wait_ready "$KFP_NS" "$deployment" 1200s
  done
}

install_port_forwards() {
  [[ "$NODE_LOCAL" == 1 ]] || return 0
  log "forwarding the UIs to 127.0.0.1 on this node (systemd unit servicetime-port-forward)"
  $SUDO tee /etc/systemd/system/servicetime-port-forward.service >/dev/null <<EOF
[Unit]
Description=servicetime: kubectl port-forwards for the UIs (reach them through an SSH tunnel)
After=k3s.service

[Service]
Environment=KUBECONFIG=$KUBECONFIG
Environment=PYTHON=$PYTHON
ExecStart=$REPO_ROOT/infra/port-forward.sh
Restart=always

[Install]
WantedBy=multi-user.target
EOF
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable --now servicetime-port-forward.service
}

print_access() {
  cat <<EOF

==> servicetime is installed.

The UIs are forwarded to 127.0.0.1 on this node (systemd unit
servicetime-port-forward). From your machine, run the tunnel that
'terraform output -raw tunnel_command' prints, then open:

  KFP UI      http://localhost:$(platform ports.kfp_ui)   (also the API for 'servicetime submit --host')
  MLflow      http://localhost:$(platform ports.mlflow)
  Grafana     http://localhost:$(platform ports.grafana)   (dashboard folder "servicetime")
  Prometheus  http://localhost:$(platform ports.prometheus)
  MinIO       http://localhost:$(platform ports.s3_console)
  Model       http://localhost:$(platform ports.model_server)/docs

Credentials are Kubernetes Secrets in namespace $NS (nothing is written to disk):

  kubectl -n $NS get secret grafana-admin -o jsonpath='{.data.password}' | base64 -d
  kubectl -n $NS get secret minio-root -o jsonpath='{.data.rootUser}' | base64 -d
  kubectl -n $NS get secret minio-root -o jsonpath='{.data.rootPassword}' | base64 -d
  kubectl -n $NS get secret s3-credentials -o jsonpath='{.data.AWS_SECRET_ACCESS_KEY}' | base64 -d
EOF
}

# The pipelines wait in the dashboard: uploaded as `servicetime`, `servicetime-plan` and
# `servicetime-monitor` (with its weekly run), a version per commit, with an experiment
# (components.cli.main submit --upload, from this venv).
upload_pipeline() {
  log "uploading the pipeline to KFP"
  local constraints=() host="${KFP_HOST:-http://127.0.0.1:$(platform ports.kfp_ui)}"
  [[ -f "$REPO_ROOT/requirements.lock" ]] && constraints=(-c "$REPO_ROOT/requirements.lock")
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${constraints[@]}" \
    'kfp==2.17.*' 'kfp-kubernetes==2.17.*'
  local cron=() monitor_cron=()
  [[ -n "$RECURRING_CRON" ]] && cron=(--cron "$RECURRING_CRON")
  [[ -n "$MONITOR_CRON" ]] && monitor_cron=(--cron "$MONITOR_CRON")
  for _ in $(seq 1 30); do  # the port-forward follows the UI pod; give it a moment
    if (cd "$REPO_ROOT" && "$VENV/bin/python" -m components.cli.main submit --upload --host "$host" "${cron[@]}" &&
        "$VENV/bin/python" -m components.cli.main submit --upload --plan --host "$host" &&
        "$VENV/bin/python" -m components.cli.main submit --upload --monitor --host "$host" "${monitor_cron[@]}"); then
      return 0  # all three: train to deploy, next week's windows, the weekly labels join
    fi
    sleep 10
  done
  echo "WARNING: could not upload the pipeline to $host; run infra/bootstrap.sh again later" >&2
  SLOW+=("pipeline upload")
}

report() {
  if (( ${#SLOW[@]} )); then
    printf '\n==> not ready yet: %s\n' "${SLOW[*]}" >&2
    echo "Everything else is installed. Look at those with kubectl describe / logs, then run the" >&2
    echo "bootstrap again to resume (terraform output -raw bootstrap_command); it repeats nothing done." >&2
    return 1
  fi
}

main() {
  wait_for_nodes
  label_state_node
  configure_registry_mirror
  ensure_venv
  fetch_upstream
  create_secrets
  apply_install
  # Access first: one slow component must not hide the UIs of the others.
  install_port_forwards
  build_image
  wait_for_platform
  wait_for_kfp
  upload_pipeline
  print_access
  report
}

# Sourced (by the tests) it only defines the steps.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
