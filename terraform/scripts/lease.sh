#!/usr/bin/env bash
# Blazar lease for a KVM@TACC flavor reservation, run by Terraform (lease.tf)
# because the OpenStack provider cannot create leases. Needs the openstack CLI
# with python-blazarclient, and OS_CLOUD naming an entry of clouds.yaml.
#
#   lease.sh create  env LEASE_NAME FLAVOR AMOUNT HOURS LEASE_FILE
#                    creates the lease (or reuses a live one of that name),
#                    waits until ACTIVE, writes its ids and end date
#                    (end_date, RFC 3339 UTC) to LEASE_FILE as JSON
#   lease.sh delete  env LEASE_NAME [LEASE_FILE]; waits until it is gone
#   lease.sh show    Terraform external-data protocol: reads {"name","file",
#                    "cloud","region"} on stdin, prints the ids as JSON
set -euo pipefail
# Failures inside $(...) stop the script too.
shopt -s inherit_errexit

WAIT_S="${LEASE_WAIT_S:-900}"
POLL_S="${LEASE_POLL_S:-10}"

die() {
  echo "lease.sh: $*" >&2
  exit 1
}
log() { echo "lease.sh: $*" >&2; }

need_cli() {
  command -v openstack >/dev/null ||
    die "openstack CLI not found: pip install python-openstackclient python-blazarclient"
  command -v python3 >/dev/null || die "python3 not found"
}

# Blazar acts on a lease through a Keystone trust that it creates with the
# caller's login, and Keystone refuses to create trusts for a restricted
# application credential (HTTP 403).
trust_refused() {
  case "$1" in
  *"not allowed for managing trusts"* | *"application_credential"*"trust"*) return 0 ;;
  esac
  return 1
}

die_trust_refused() {
  die "Keystone refused Blazar a trust for this login, so the lease cannot be created:
  $1

  Blazar needs a Keystone trust to create a lease, and your clouds.yaml holds a
  restricted application credential, which may not create trusts. Either:
  1. create an application credential with 'Unrestricted' ticked (KVM@TACC
     dashboard > Identity > Application Credentials; mind what that allows,
     see terraform/README.md, step 3), save its clouds.yaml and run
     'terraform apply' again; or
  2. keep this credential and create the lease with your own login (dashboard
     > Reservations > Leases > Create Lease, a flavor reservation of
     ${FLAVOR:-your flavor} with amount = node_count), then put its
     reservation id into terraform.tfvars as reservation_id and run
     'terraform apply' again."
}

# field JSON KEY: one string value of a flat JSON object.
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"; }

# describe NAME: {"status","lease_id","reservation_id","flavor_id"} of the
# lease, or nothing when no lease has that name. Any other API failure stops
# the script, so a broken login never reads as "already deleted".
describe() {
  local leases id raw
  leases="$(openstack reservation lease list -f json)" ||
    die "cannot list leases (check clouds.yaml and OS_CLOUD=${OS_CLOUD:-})"
  id="$(python3 -c '
import json, sys
ids = [l["id"] for l in json.loads(sys.argv[1]) if l.get("name") == sys.argv[2]]
print(ids[0] if ids else "")
' "$leases" "$1")"
  [ -n "$id" ] || return 0
  raw="$(openstack reservation lease show "$id" -f json)" || die "cannot show lease $1"
  # The client prints reservations as a list, or as JSON objects joined by
  # newlines, depending on its version.
  python3 -c '
import datetime, json, sys

lease = json.loads(sys.argv[1])
res = lease.get("reservations") or []
if isinstance(res, str):
    decoder, text, items = json.JSONDecoder(), res.strip(), []
    while text:
        item, end = decoder.raw_decode(text)
        items.append(item)
        text = text[end:].strip()
    res = items
if isinstance(res, dict):
    res = [res]
flavor = [r for r in res if r.get("resource_type") == "flavor:instance"] or res
r = flavor[0] if flavor else {}
# Blazar prints its end date in UTC without a zone ("2026-12-02T09:00:00.000000");
# end_date is RFC 3339 in UTC, or empty if the date cannot be read.
end = ""
try:
    when = datetime.datetime.fromisoformat(str(lease.get("end_date", "")).strip())
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)
    end = when.strftime("%Y-%m-%dT%H:%M:%SZ")
except ValueError:
    pass
# Blazar gives the reserved flavor the reservation id.
print(json.dumps({
    "status": str(lease.get("status", "")),
    "lease_id": str(lease.get("id", "")),
    "reservation_id": str(r.get("id", "")),
    "flavor_id": str(r.get("flavor_id") or r.get("id", "")),
    "end_date": end,
}))
' "$raw"
}

# Assign describe's output before testing it: inside a test its failure
# would read as "no such lease".
wait_gone() {
  local deadline=$((SECONDS + WAIT_S)) info
  while :; do
    info="$(describe "$1")"
    [ -n "$info" ] || return 0
    [ "$SECONDS" -lt "$deadline" ] || die "lease $1 still exists after ${WAIT_S}s"
    sleep "$POLL_S"
  done
}

cmd_create() {
  : "${LEASE_NAME:?}" "${FLAVOR:?}" "${AMOUNT:?}" "${HOURS:?}" "${LEASE_FILE:?}"
  need_cli
  local info status
  info="$(describe "$LEASE_NAME")"
  status="$( [ -z "$info" ] || field "$info" status)"
  case "$status" in
  TERMINATED | TERMINATING | ERROR)
    log "old lease $LEASE_NAME is $status; replacing it"
    openstack reservation lease delete "$LEASE_NAME" >/dev/null || true
    wait_gone "$LEASE_NAME"
    info=""
    ;;
  esac

  if [ -z "$info" ]; then
    local flavor_uuid end_date
    flavor_uuid="$(openstack flavor show "$FLAVOR" -f value -c id)"
    end_date="$(python3 -c '
import datetime, sys
end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=int(sys.argv[1]))
print(end.strftime("%Y-%m-%d %H:%M"))
' "$HOURS")"
    log "creating lease $LEASE_NAME: ${AMOUNT} x $FLAVOR until $end_date UTC"
    local err
    if ! err="$(openstack reservation lease create \
      --reservation "resource_type=flavor:instance,flavor_id=${flavor_uuid},amount=${AMOUNT}" \
      --end-date "$end_date" \
      "$LEASE_NAME" 2>&1 >/dev/null)"; then
      if trust_refused "$err"; then die_trust_refused "$err"; fi
      die "cannot create lease $LEASE_NAME: $err"
    fi
  else
    log "reusing lease $LEASE_NAME ($status)"
  fi

  local deadline=$((SECONDS + WAIT_S))
  while :; do
    info="$(describe "$LEASE_NAME")"
    [ -n "$info" ] || die "lease $LEASE_NAME disappeared"
    status="$(field "$info" status)"
    case "$status" in
    ACTIVE) break ;;
    ERROR | TERMINATING | TERMINATED) die "lease $LEASE_NAME is $status (not enough capacity? see: openstack reservation lease show $LEASE_NAME)" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "lease $LEASE_NAME not ACTIVE after ${WAIT_S}s (status $status)"
    log "lease $LEASE_NAME is ${status:-unknown}; waiting"
    sleep "$POLL_S"
  done

  local flavor_id
  flavor_id="$(field "$info" flavor_id)"
  [ -n "$flavor_id" ] || die "lease $LEASE_NAME has no flavor reservation"
  mkdir -p "$(dirname "$LEASE_FILE")"
  printf '%s\n' "$info" >"$LEASE_FILE"
  log "lease $LEASE_NAME ACTIVE, reserved flavor $flavor_id"
}

cmd_delete() {
  : "${LEASE_NAME:?}"
  need_cli
  local info
  info="$(describe "$LEASE_NAME")"
  if [ -n "$info" ]; then
    log "deleting lease $LEASE_NAME"
    openstack reservation lease delete "$LEASE_NAME" >/dev/null
    wait_gone "$LEASE_NAME"
  else
    log "lease $LEASE_NAME already gone"
  fi
  if [ -n "${LEASE_FILE:-}" ]; then rm -f "$LEASE_FILE"; fi
}

cmd_show() {
  local query name file info
  query="$(cat)"
  name="$(field "$query" name)"
  file="$(field "$query" file)"
  if [ -z "$name" ] || [ -z "$file" ]; then die "show needs name and file in its query"; fi
  # (A file from before end_date was recorded is read again from Blazar.)
  if [ -s "$file" ] && [ -n "$(field "$(cat "$file")" end_date)" ]; then
    cat "$file"
    return 0
  fi
  # The file is local; rebuild it from Blazar (another checkout, a clean dir).
  OS_CLOUD="$(field "$query" cloud)"
  OS_REGION_NAME="$(field "$query" region)"
  export OS_CLOUD OS_REGION_NAME
  need_cli
  info="$(describe "$name")"
  if [ -z "$info" ]; then
    # servicetime-<user>-<node key>, and user names may hold dashes too
    local key=KEY
    if [[ "$name" =~ -(server|agent-[0-9]+)$ ]]; then key="${BASH_REMATCH[1]}"; fi
    die "lease $name not found (ended or deleted?); recreate it and its node with:
  terraform apply -replace='terraform_data.lease[\"$key\"]' -replace='openstack_compute_instance_v2.node[\"$key\"]'"
  fi
  mkdir -p "$(dirname "$file")"
  printf '%s\n' "$info" >"$file"
  printf '%s\n' "$info"
}

case "${1:-}" in
create) cmd_create ;;
delete) cmd_delete ;;
show) cmd_show ;;
*) die "usage: lease.sh create|delete|show" ;;
esac
