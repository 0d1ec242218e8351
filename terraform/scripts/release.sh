#!/usr/bin/env bash
# Releases what a dead lease leaves behind. When a lease ends, Blazar deletes
# its VM, but the floating IP (one of the project's few public addresses)
# and the node's ports stay, and a VM that failed to go may linger. This
# finds them by the names Terraform gives them (servicetime-<user>-...),
# says what it found, and deletes them only with --yes. It keeps everything
# that still serves a live node: an instance whose lease is alive, a port
# that an instance uses, a floating IP on such a port. Needs the openstack
# CLI (with python-blazarclient) and OS_CLOUD, as lease.sh does.
#
#   scripts/release.sh [USER] [--yes]     USER defaults to `user` in terraform.tfvars
#
# The network, subnet and security groups stay (terraform destroy removes
# them), and so does the kept state volume (state/).
set -euo pipefail
# Failures inside $(...) stop the script too.
shopt -s inherit_errexit

die() {
  echo "release.sh: $*" >&2
  exit 1
}

user="" yes=false
for arg in "$@"; do
  case "$arg" in
  --yes) yes=true ;;
  -h | --help)
    sed -n '2,15p' "$0"
    exit 0
    ;;
  -*) die "unknown option $arg (usage: release.sh [USER] [--yes])" ;;
  *) user="$arg" ;;
  esac
done
if [ -z "$user" ]; then
  tfvars="$(dirname "$0")/../terraform.tfvars"
  if [ -f "$tfvars" ]; then
    user="$(sed -nE 's/^[[:space:]]*user[[:space:]]*=[[:space:]]*"([^"]*)".*/\1/p' "$tfvars" | head -n 1)"
  fi
fi
[[ "$user" =~ ^[a-z][a-z0-9-]{1,22}[a-z0-9]$ ]] || die "give your user name (as in terraform.tfvars): release.sh USER [--yes]"
command -v openstack >/dev/null || die "openstack CLI not found: pip install python-openstackclient python-blazarclient"
command -v python3 >/dev/null || die "python3 not found"

# Any API failure stops the script: a broken login must not read as "nothing left".
leases="$(openstack reservation lease list -f json)" || die "cannot list leases (check clouds.yaml and OS_CLOUD=${OS_CLOUD:-})"
lease_status="{}"
for id in $(python3 -c '
import json, re, sys
pattern = re.compile(r"servicetime-" + re.escape(sys.argv[2]) + r"-(server|agent-[0-9]+)")
print(" ".join(l["id"] for l in json.loads(sys.argv[1]) if pattern.fullmatch(l.get("name") or "")))
' "$leases" "$user"); do
  shown="$(openstack reservation lease show "$id" -f json)" || die "cannot show lease $id"
  lease_status="$(python3 -c '
import json, sys
status = json.loads(sys.argv[1])
lease = json.loads(sys.argv[2])
status[lease["name"]] = str(lease.get("status", ""))
print(json.dumps(status))
' "$lease_status" "$shown")"
done
servers="$(openstack server list -f json)" || die "cannot list instances"
ports="$(openstack port list --long -f json)" || die "cannot list ports"
fips="$(openstack floating ip list --long -f json)" || die "cannot list floating IPs"

# One line per finding: action <TAB> kind <TAB> id <TAB> what it is.
plan="$(python3 - "$user" "$lease_status" "$servers" "$ports" "$fips" <<'PY'
import json, re, sys

user, leases, servers, ports, fips = sys.argv[1], *map(json.loads, sys.argv[2:])
prefix = "servicetime-" + re.escape(user) + "-"
node_name = re.compile(prefix + r"(server|agent-[0-9]+)")
port_name = re.compile(prefix + r"(server|agent-[0-9]+)-(shared|private)")


def alive(status):
    return status not in ("TERMINATED", "TERMINATING", "ERROR")


# An instance is left behind when it is in ERROR or its own lease has ended.
dead_nodes = set()
for s in servers:
    m = node_name.fullmatch(s.get("Name") or "")
    if not m:
        continue
    name, status, lease = s["Name"], s.get("Status"), leases.get(s["Name"])
    if status == "ERROR" or (lease is not None and not alive(lease)):
        dead_nodes.add(m.group(1))
        why = f"status {status}" + (f", lease {lease}" if lease is not None else "")
        print(f"delete\tinstance\t{s['ID']}\t{name} ({why})")
    else:
        why = f"lease {lease}" if lease is not None else "no lease of its name"
        print(f"keep\tinstance\t{s['ID']}\t{name} ({status}, {why})")

# A port is left behind when no instance uses it (Nova unbinds the ports it
# did not create), or its node is being released.
released_ports = set()
for p in ports:
    m = port_name.fullmatch(p.get("Name") or "")
    if not m:
        continue
    if not p.get("Device Owner") or m.group(1) in dead_nodes:
        released_ports.add(p["ID"])
        print(f"delete\tport\t{p['ID']}\t{p['Name']}")
    else:
        print(f"keep\tport\t{p['ID']}\t{p['Name']} (in use)")

for f in fips:
    if (f.get("Description") or "") != f"servicetime-{user} control plane":
        continue
    what = f"{f.get('Floating IP Address')} ({f['Description']})"
    if not f.get("Port") or f["Port"] in released_ports:
        print(f"delete\tfloating ip\t{f['ID']}\t{what}")
    else:
        print(f"keep\tfloating ip\t{f['ID']}\t{what}, on a port in use")
PY
)"

if [ -z "$plan" ]; then
  echo "nothing of servicetime-$user is left behind"
  exit 0
fi
while IFS=$'\t' read -r action kind id what; do
  if [ "$action" = keep ]; then echo "keeping $kind $what"; fi
done <<<"$plan"
if ! grep -q '^delete' <<<"$plan"; then
  echo "nothing to release: everything above serves a live node"
  exit 0
fi
if ! $yes; then
  while IFS=$'\t' read -r action kind id what; do
    if [ "$action" = delete ]; then echo "would delete $kind $what [$id]"; fi
  done <<<"$plan"
  echo "dry run: nothing deleted; run again with --yes to delete the above"
  exit 0
fi

# Floating IPs first (they hold a port), then instances, then their ports.
for kind in "floating ip" instance port; do
  while IFS=$'\t' read -r action k id what; do
    if [ "$action" != delete ] || [ "$k" != "$kind" ]; then continue; fi
    case "$kind" in
    "floating ip") openstack floating ip delete "$id" ;;
    instance) openstack server delete --wait "$id" ;;
    port) openstack port delete "$id" ;;
    esac
    echo "deleted $kind $what [$id]"
  done <<<"$plan"
done
