#!/usr/bin/env bash
# Puts the platform's state folder (STATE_PATH, state.host_path of
# components/core/platform.yaml) in place on the control plane; k3s-node.sh runs
# it before k3s is installed. With a kept Cinder volume (STATE_VOLUME_ID) it
# waits for the disk, makes an ext4 file system only if the disk holds
# none, and mounts it there, now and at every boot (fstab; k3s waits for the
# mount). It never formats a disk that holds anything. Without a volume the
# folder is made on the root disk. Safe to repeat; does nothing on agents.
set -euo pipefail
# Failures inside $(...) stop the script too.
shopt -s inherit_errexit

ENV_FILE="${1:-/etc/servicetime/cluster.env}"
# shellcheck source=/dev/null
. "$ENV_FILE"
[ "${K3S_ROLE:-}" = server ] || exit 0
: "${STATE_PATH:?}"

# SERVICETIME_ROOT moves every system path into a sandbox (the tests).
ROOT="${SERVICETIME_ROOT:-}"
WAIT_S="${SERVICETIME_STATE_WAIT_S:-600}"
state_dir="$ROOT$STATE_PATH"

log() { echo "servicetime-state: $*"; }
die() {
  log "$*" >&2
  exit 1
}

if [ -z "${STATE_VOLUME_ID:-}" ]; then
  install -d -m 0755 "$state_dir"
  log "no state volume: $STATE_PATH is on the root disk and goes with this node"
  exit 0
fi

# Nova shows a Cinder volume with the virtio serial of its id's first 20
# characters. Terraform attaches it once the VM exists: wait for it.
dev="$ROOT/dev/disk/by-id/virtio-${STATE_VOLUME_ID:0:20}"
for ((i = 0; ; i += 2)); do
  [ -e "$dev" ] && break
  [ "$i" -lt "$WAIT_S" ] ||
    die "volume $STATE_VOLUME_ID did not appear as $dev in ${WAIT_S}s; not installing k3s (is it attached? openstack server show ... -c volumes_attached)"
  sleep 2
done
disk="$(readlink -f "$dev")"

# blkid exits 2 when the disk holds no signature at all, the only case in
# which it is formatted. Anything else that does not name a file system
# (a partition table, a failed probe) stops here rather than risk data.
rc=0
fstype="$(blkid -p -o value -s TYPE "$disk")" || rc=$?
case "$rc" in
0)
  [ -n "$fstype" ] || die "$disk holds something blkid cannot name as a file system (a partition table?); not formatting or mounting it"
  log "$disk holds a $fstype file system: keeping it"
  ;;
2)
  log "$disk is empty: making an ext4 file system (first use of this volume)"
  mkfs.ext4 -q -L servicetime "$disk"
  fstype=ext4
  ;;
*) die "blkid could not read $disk (status $rc); not formatting it" ;;
esac

install -d -m 0755 "$state_dir"
fstab="$ROOT/etc/fstab"
if awk -v p="$STATE_PATH" '$2 == p { found = 1 } END { exit !found }' "$fstab" 2>/dev/null; then
  log "$fstab already mounts $STATE_PATH"
else
  # nofail: a missing volume must not keep the node from booting (and SSH).
  echo "$dev $STATE_PATH $fstype defaults,nofail 0 2" >>"$fstab"
fi
if mountpoint -q "$state_dir"; then
  log "$STATE_PATH is already mounted"
else
  mount -t "$fstype" -o defaults "$dev" "$state_dir"
  log "mounted $dev at $STATE_PATH"
fi

# After a reboot k3s starts only once the volume is mounted, so the
# platform never writes its state to the root disk underneath.
dropin="$ROOT/etc/systemd/system/k3s.service.d"
install -d -m 0755 "$dropin"
printf '[Unit]\nRequiresMountsFor=%s\n' "$STATE_PATH" >"$dropin/servicetime-state.conf"
