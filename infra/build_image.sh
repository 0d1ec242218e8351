#!/usr/bin/env bash
# Build the servicetime image on the control-plane node and push it to the
# in-cluster registry, which listens on this node's registry port under the
# name pods use (cloud-init maps the name to this node in /etc/hosts). BuildKit
# (pinned in components/core/platform.yaml) runs as a rootful daemon with the OCI
# worker; it is installed on first use. Name and tag come only from platform.yaml.
#
#   infra/build_image.sh              build and push
#   infra/build_image.sh --print      print the image reference, build nothing
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BUILDKIT_SOCK="${BUILDKIT_SOCK:-/run/buildkit/buildkitd.sock}"
SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO="sudo"

# shellcheck source=infra/platform.sh
source "$REPO_ROOT/infra/platform.sh"

REPOSITORY="$(platform image.repository)"   # e.g. registry.servicetime.local:5050/servicetime
TAG="$(platform image.tag)"
BUILDKIT_VERSION="$(platform versions.buildkit)"
IMAGE="$REPOSITORY:$TAG"
REGISTRY="${REPOSITORY%%/*}"

if [[ "${1:-}" == "--print" ]]; then
  printf 'image %s\nregistry %s\n' "$IMAGE" "$REGISTRY"
  exit 0
fi

install_buildkit() {
  local url="https://github.com/moby/buildkit/releases/download/${BUILDKIT_VERSION}/buildkit-${BUILDKIT_VERSION}.linux-amd64.tar.gz"
  echo "installing BuildKit $BUILDKIT_VERSION"
  local tmp
  tmp="$(mktemp -d)"
  curl -fsSL "$url" -o "$tmp/buildkit.tgz"
  tar -xzf "$tmp/buildkit.tgz" -C "$tmp"
  $SUDO install -m 0755 "$tmp"/bin/buildkitd "$tmp"/bin/buildctl "$tmp"/bin/buildkit-runc /usr/local/bin/
  rm -rf "$tmp"
}

start_buildkitd() {
  # A transient systemd unit: survives this shell, is replaced on reboot.
  $SUDO systemd-run --unit=servicetime-buildkitd --collect \
    /usr/local/bin/buildkitd --addr "unix://$BUILDKIT_SOCK" \
    --oci-worker=true --oci-worker-binary=/usr/local/bin/buildkit-runc \
    --oci-worker-net=host --containerd-worker=false
  for _ in $(seq 1 30); do
    $SUDO buildctl --addr "unix://$BUILDKIT_SOCK" debug workers >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "buildkitd did not start: journalctl -u servicetime-buildkitd" >&2
  return 1
}

installed_version() { buildctl --version 2>/dev/null | awk '{print $3}'; }
if [[ "$(installed_version)" != "$BUILDKIT_VERSION" ]]; then
  install_buildkit
fi
if ! $SUDO buildctl --addr "unix://$BUILDKIT_SOCK" debug workers >/dev/null 2>&1; then
  start_buildkitd
fi

if [[ ! -f "$REPO_ROOT/requirements.lock" ]]; then
  echo "requirements.lock is missing: run 'make lock' first" >&2
  exit 1
fi

echo "building and pushing $IMAGE"
$SUDO buildctl --addr "unix://$BUILDKIT_SOCK" build \
  --frontend dockerfile.v0 \
  --local context="$REPO_ROOT" \
  --local dockerfile="$REPO_ROOT/infra" \
  --opt filename=Dockerfile \
  --output "type=image,name=$IMAGE,push=true,registry.insecure=true"

# The registry must now answer for the tag, as the nodes will ask for it.
curl -fsS -o /dev/null \
  -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
  "http://$REGISTRY/v2/${REPOSITORY#*/}/manifests/$TAG"
echo "pushed $IMAGE"

# The image now lives in the registry; BuildKit's cache of layers and pip
# downloads would otherwise fill the node's root disk over a few rebuilds.
$SUDO buildctl --addr "unix://$BUILDKIT_SOCK" prune >/dev/null
echo "pruned the BuildKit cache"
