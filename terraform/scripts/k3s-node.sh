#!/usr/bin/env bash
# Runs once per node from cloud-init: installs the pinned k3s release as the
# server (first node) or as an agent that joins it, both bound to the private
# network. Facts come from the env file Terraform rendered.
set -euo pipefail

ENV_FILE="${1:-/etc/servicetime/cluster.env}"
# shellcheck source=/dev/null
. "$ENV_FILE"
: "${K3S_ROLE:?}" "${K3S_VERSION:?}" "${K3S_JOIN_TOKEN:?}" "${NODE_IP:?}" "${NODE_MAC:?}"
: "${PRIVATE_PREFIX:?}" "${SERVER_IP:?}" "${REGISTRY_HOST:?}"
PRIVATE_MTU="${PRIVATE_MTU:-1450}"

# System paths, overridable so the tests can run this script in a sandbox.
STATE_SETUP="${SERVICETIME_STATE_SETUP:-/usr/local/sbin/servicetime-state}"
SYS_NET="${SERVICETIME_SYS_NET:-/sys/class/net}"
NETPLAN_DIR="${SERVICETIME_NETPLAN_DIR:-/etc/netplan}"
HOSTS_FILE="${SERVICETIME_HOSTS_FILE:-/etc/hosts}"

log() { echo "servicetime-k3s: $*"; }

# CC-Ubuntu24.04 runs firewalld, which drops what k3s needs between nodes
# (the API on 6443, flannel VXLAN on 8472/udp, the kubelet on 10250, the
# registry). The security groups filter traffic, as k3s's requirements
# assume: turn host firewalls off for good before anything is installed.
disable_host_firewalls() {
  local unit installed
  if command -v ufw >/dev/null; then ufw disable >/dev/null || true; fi
  for unit in firewalld ufw; do
    installed="$(systemctl list-unit-files --no-legend "$unit.service" 2>/dev/null || true)"
    case "$installed" in
    "$unit.service"*)
      log "stopping and masking $unit"
      systemctl disable --now "$unit.service" || true
      systemctl mask "$unit.service"
      ;;
    esac
  done
}
disable_host_firewalls

# Interface names differ between images; the private port's MAC does not.
private_iface() {
  local dev
  for dev in "$SYS_NET"/*; do
    if [ "$(cat "$dev/address" 2>/dev/null)" = "${NODE_MAC,,}" ]; then
      basename "$dev"
      return 0
    fi
  done
  return 1
}

has_ip() { ip -4 -o addr show dev "$1" | grep -q "inet ${NODE_IP}/"; }

iface=""
for _ in $(seq 1 60); do
  if iface="$(private_iface)"; then break; fi
  sleep 2
done
[ -n "$iface" ] || { log "no interface has MAC $NODE_MAC"; exit 1; }

for _ in $(seq 1 30); do
  if has_ip "$iface"; then break; fi
  sleep 2
done
# If the image did not bring the second NIC up with DHCP, pin the address
# Terraform assigned (persistently, so a reboot keeps the cluster), with the
# network's MTU: Neutron tenant networks are smaller than Ethernet's 1500.
if ! has_ip "$iface"; then
  log "configuring $NODE_IP/$PRIVATE_PREFIX (MTU $PRIVATE_MTU) on $iface"
  netplan_file="$NETPLAN_DIR/60-servicetime-private.yaml"
  printf 'network:\n  version: 2\n  ethernets:\n    %s:\n      dhcp4: false\n      mtu: %s\n      addresses: [%s/%s]\n' \
    "$iface" "$PRIVATE_MTU" "$NODE_IP" "$PRIVATE_PREFIX" >"$netplan_file"
  chmod 0600 "$netplan_file"
  netplan apply
  has_ip "$iface" || { log "$iface still lacks $NODE_IP"; exit 1; }
fi

# Host tools (image pushes from the control plane) resolve the registry too.
registry_name="${REGISTRY_HOST%%:*}"
grep -qE "[[:space:]]${registry_name//./\\.}([[:space:]]|\$)" "$HOSTS_FILE" ||
  echo "$SERVER_IP $registry_name" >>"$HOSTS_FILE"

# The platform's state folder (on the kept volume, if there is one) must be
# in place before k3s starts the pods that write to it; if it cannot be,
# k3s is not installed. (state-volume.sh does nothing on agents.)
if [ "$K3S_ROLE" = server ]; then
  "$STATE_SETUP" "$ENV_FILE"
fi

# The installer is taken from the same tag as the binary it installs.
installer="$(mktemp)"
trap 'rm -f "$installer"' EXIT
curl -sfL --retry 10 --retry-delay 5 -o "$installer" \
  "https://raw.githubusercontent.com/k3s-io/k3s/${K3S_VERSION/+/%2B}/install.sh"

args=(--node-ip "$NODE_IP" --flannel-iface "$iface")
for label in ${NODE_LABELS:-}; do
  args+=(--node-label "$label")
done

export INSTALL_K3S_VERSION="$K3S_VERSION"
if [ "$K3S_ROLE" = server ]; then
  log "installing k3s $K3S_VERSION server on $NODE_IP ($iface)"
  # No K3S_TOKEN: k3s makes the server token here and it stays here (root-only, in its data dir).
  sh "$installer" server "${args[@]}" --tls-san "$NODE_IP"
else
  log "installing k3s $K3S_VERSION agent on $NODE_IP ($iface), joining $SERVER_IP"
  # The bootstrap token, valid only while the control plane waits for nodes; the agent
  # service keeps retrying until the server answers and accepts it. Once joined, the agent
  # restarts on its own credentials: the token's deletion does not affect it.
  K3S_TOKEN="$K3S_JOIN_TOKEN" K3S_URL="https://${SERVER_IP}:6443" sh "$installer" agent "${args[@]}"
fi
