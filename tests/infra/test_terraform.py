"""Offline checks of terraform/ (and its state/ module): HCL invariants, the
cloud-init user-data, the shell scripts in sandboxes, and the lease and
release scripts against a fake openstack CLI.

Nothing here reaches a network: providers are never initialised, and
Terraform itself (when installed) only formats files and renders a template.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "terraform"
TEMPLATE = TF_DIR / "cloud-init" / "node.yaml.tftpl"
PLATFORM = yaml.safe_load((ROOT / "components" / "core" / "platform.yaml").read_text())

TF_FILES = sorted(TF_DIR.glob("*.tf"))
STATE_DIR = TF_DIR / "state"
STATE_TF_FILES = sorted(STATE_DIR.glob("*.tf"))
SCRIPTS = sorted(TF_DIR.rglob("*.sh"))
PUBLIC = {"0.0.0.0/0", "::/0"}
SUFFIX_REF = "local.suffix"
TERRAFORM = shutil.which("terraform")
# Terraform must not phone home (version checkpoint) during tests.
TF_ENV = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_CLI_CONFIG_FILE": os.devnull}


# --------------------------------------------------------------------------
# HCL helpers
# --------------------------------------------------------------------------


def _unquote(value):
    """python-hcl2 8 keeps string quotes unless told otherwise; strip them anyway."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _load(path: Path) -> dict:
    options = getattr(hcl2, "SerializationOptions", None)
    with path.open() as fh:
        if options is None:
            return _unquote(hcl2.load(fh))
        opts = options(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
        return _unquote(hcl2.load(fh, serialization_options=opts))


def _merged(files: list[Path]) -> dict[str, list]:
    assert files, "no .tf files"
    merged: dict[str, list] = {}
    for path in files:
        for kind, items in _load(path).items():
            merged.setdefault(kind, []).extend(items)
    return merged


@pytest.fixture(scope="module")
def hcl() -> dict[str, list]:
    """All top-level blocks of the main module's .tf files, merged by block type."""
    return _merged(TF_FILES)


@pytest.fixture(scope="module")
def state_hcl() -> dict[str, list]:
    """The same for the state volume's own root module (terraform/state)."""
    return _merged(STATE_TF_FILES)


def _labelled(hcl: dict, kind: str) -> dict[str, dict]:
    """{name: body} for single-label blocks (variable, output)."""
    return {name: body for item in hcl.get(kind, []) for name, body in item.items()}


def _resources(hcl: dict, kind: str = "resource") -> list[tuple[str, str, dict]]:
    return [
        (rtype, rname, body)
        for item in hcl.get(kind, [])
        for rtype, named in item.items()
        for rname, body in named.items()
    ]


def _locals(hcl: dict) -> dict:
    merged: dict = {}
    for block in hcl.get("locals", []):
        merged.update(block)
    return merged


# --------------------------------------------------------------------------
# versions, provider, variables
# --------------------------------------------------------------------------

PINNED = re.compile(r"^\s*(~>\s*\d+\.\d+(\.\d+)?|=?\s*\d+\.\d+\.\d+)\s*$")


def test_versions_are_pinned(hcl):
    (terraform,) = hcl["terraform"]
    required = terraform["required_version"]
    assert ">=" in required and "<" in required or "~>" in required, required
    providers = {}
    for block in terraform["required_providers"]:
        providers.update(block)
    assert providers["openstack"]["source"] == "terraform-provider-openstack/openstack"
    assert {"openstack", "random", "external"} <= set(providers)
    for name, spec in providers.items():
        assert spec.get("source"), f"provider {name} has no source"
        assert PINNED.match(spec.get("version", "")), f"provider {name} is not pinned: {spec.get('version')!r}"


def test_provider_uses_clouds_yaml_on_kvm_tacc(hcl):
    (provider,) = [p["openstack"] for p in hcl["provider"] if "openstack" in p]
    assert provider["cloud"] == "${var.os_cloud}"
    assert provider["region"] == "${var.region}"
    assert set(provider) == {"cloud", "region"}, "credentials belong in clouds.yaml, not in the provider block"
    variables = _labelled(hcl, "variable")
    assert variables["region"]["default"] == "KVM@TACC"
    text = "\n".join(p.read_text() for p in TF_FILES)
    secrets = re.findall(r"^\s*(password|application_credential_\w+|token|user_name)\s*=", text, re.MULTILINE)
    assert not secrets, f"credentials in .tf files: {secrets}"


CONSTRAINED = {
    "user",
    "key_pair",
    "node_count",
    "server_flavor",
    "private_mtu",
    "lease_hours",
    "reservation_id",
    "private_cidr",
    "state_volume_id",
    "registry_mirror",
    "shared_security_groups",
    "prebuilt_image",
    "repo_url",
    "repo_ref",
}


def test_variables_have_description_type_and_validation(hcl):
    variables = _labelled(hcl, "variable")
    assert variables
    for name, body in variables.items():
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"
    for name in CONSTRAINED:
        rules = variables[name].get("validation")
        assert rules, f"variable {name} needs a validation block"
        for rule in rules:
            assert rule.get("condition") and rule.get("error_message"), name
    # one node passes for a cluster but cannot run a RayJob next to the platform
    node_rule = variables["node_count"]["validation"][0]
    assert "var.node_count >= 2" in node_rule["condition"]
    assert "2 to 20" in node_rule["error_message"]
    assert variables["private_mtu"]["default"] == 1450
    # optional features are off unless set
    for name in ("state_volume_id", "registry_mirror", "prebuilt_image"):
        assert variables[name]["default"] == "", name
    assert variables["shared_security_groups"]["default"] == {}


def test_lease_length_fits_a_lab_session(hcl):
    """A lab is 3-4 hours; the default lease covers it with boot time and slack,
    and says why (leases cannot be extended, and they use the allocation)."""
    lease_hours = _labelled(hcl, "variable")["lease_hours"]
    assert 4 < lease_hours["default"] <= 8
    description = lease_hours["description"]
    assert "lab" in description and "cannot be extended" in description


def test_no_gpu_option_is_left_half_built(hcl):
    """The GPU node was removed (README.md says why): nothing may still offer it."""
    text = "\n".join(p.read_text() for p in [*TF_FILES, TEMPLATE, *SCRIPTS, TF_DIR / "terraform.tfvars.example"])
    assert not re.search(r"gpu", text, re.IGNORECASE), "a GPU remnant in terraform/"
    readme = (TF_DIR / "README.md").read_text()
    assert "## Why there is no GPU node" in readme
    for reason in ("device plugin", "RuntimeClass", "CUDA", "seconds"):
        assert reason in readme, reason


def test_tfvars_example_sets_only_declared_variables(hcl):
    declared = set(_labelled(hcl, "variable"))
    example = (TF_DIR / "terraform.tfvars.example").read_text()
    used = set(re.findall(r"^\s*#?\s*([a-z_]+)\s*=", example, re.MULTILINE))
    assert used, "terraform.tfvars.example sets nothing"
    assert used <= declared, f"unknown variables in the example: {used - declared}"
    required = {n for n, b in _labelled(hcl, "variable").items() if "default" not in b}
    uncommented = set(re.findall(r"^([a-z_]+)\s*=", example, re.MULTILINE))
    assert required <= uncommented, f"example must set every required variable: {required - uncommented}"


# --------------------------------------------------------------------------
# names, security groups, network
# --------------------------------------------------------------------------


def test_suffix_is_derived_from_user(hcl):
    assert _locals(hcl)["suffix"] == "servicetime-${var.user}"


def test_every_resource_name_carries_the_suffix(hcl):
    named = [(t, n, b["name"]) for t, n, b in _resources(hcl) if "name" in b]
    assert len(named) >= 7
    for rtype, rname, value in named:
        assert SUFFIX_REF in str(value), f"{rtype}.{rname} name {value!r} lacks the per-user suffix"
    # resources without a name argument still say whose they are
    (fip,) = [b for t, _, b in _resources(hcl) if t == "openstack_networking_floatingip_v2"]
    assert SUFFIX_REF in fip["description"]


def test_only_ssh_is_open_to_the_world(hcl):
    rules = [(n, b) for t, n, b in _resources(hcl) if t == "openstack_networking_secgroup_rule_v2"]
    assert rules
    public = []
    for name, rule in rules:
        prefix = rule.get("remote_ip_prefix")
        anywhere = prefix in PUBLIC or (prefix is None and rule.get("remote_group_id") is None)
        if not anywhere or rule.get("direction") == "egress":
            continue
        public.append(name)
        assert rule.get("protocol") == "tcp", f"rule {name} opens more than TCP to the world"
        assert (rule.get("port_range_min"), rule.get("port_range_max")) == (22, 22), (
            f"rule {name} opens ports other than 22 to the world"
        )
    assert public == ["ssh"]
    (cluster,) = [b for n, b in rules if n == "cluster"]
    assert cluster["remote_ip_prefix"] == "${var.private_cidr}"


def test_ports_keep_port_security(hcl):
    ports = [(n, b) for t, n, b in _resources(hcl) if t == "openstack_networking_port_v2"]
    assert {n for n, _ in ports} == {"shared", "private"}
    for name, port in ports:
        assert port.get("port_security_enabled", True) is not False, name
        assert port.get("security_group_ids"), f"port {name} has no security group"
    network = {n: b for t, n, b in _resources(hcl, "data") if t == "openstack_networking_network_v2"}
    assert network["sharednet1"]["name"] == "sharednet1"
    (fip,) = [b for t, _, b in _resources(hcl) if t == "openstack_networking_floatingip_v2"]
    assert fip["pool"] == "public"
    assert "shared" in fip["port_id"] and "server" in fip["port_id"]
    (subnet,) = [b for t, _, b in _resources(hcl) if t == "openstack_networking_subnet_v2"]
    assert subnet["no_gateway"] is True, "the default route must stay on sharednet1"


def test_security_groups_are_own_or_shared(hcl):
    """Either two groups per user, or (a class in one project) two existing
    ones looked up by name and none created: never both, never neither."""
    own = _locals(hcl)["own_security_groups"]
    assert own == "${length(var.shared_security_groups) == 0}"
    groups = [(t, n, b) for t, n, b in _resources(hcl) if t.startswith("openstack_networking_secgroup")]
    assert {(t, n) for t, n, _ in groups} == {
        (f"openstack_networking_secgroup{kind}_v2", name) for kind in ("", "_rule") for name in ("ssh", "cluster")
    }
    for rtype, name, body in groups:
        assert body["count"] == "${local.own_security_groups ? 1 : 0}", f"{rtype}.{name} is made in both modes"
    for name in ("ssh", "cluster"):
        (rule,) = [b for t, n, b in groups if t == "openstack_networking_secgroup_rule_v2" and n == name]
        assert rule["security_group_id"] == f"${{openstack_networking_secgroup_v2.{name}[0].id}}"
    (shared,) = [b for t, n, b in _resources(hcl, "data") if t == "openstack_networking_secgroup_v2"]
    assert shared["for_each"] == "${var.shared_security_groups}" and shared["name"] == "${each.value}"
    ids = _locals(hcl)["security_group_ids"]
    assert ids.startswith("${local.own_security_groups ?")
    own_branch, shared_branch = ids.split(" : tomap(", 1)
    assert "openstack_networking_secgroup_v2.ssh[*]" in own_branch and "cluster[*]" in own_branch
    assert "data.openstack_networking_secgroup_v2.shared" in shared_branch
    ports = {n: b for t, n, b in _resources(hcl) if t == "openstack_networking_port_v2"}
    assert ports["shared"]["security_group_ids"] == ["${local.security_group_ids.ssh}"]
    assert ports["private"]["security_group_ids"] == ["${local.security_group_ids.cluster}"]
    # the groups of a deployment from before the option keep their place
    moved = {(m["from"], m["to"]) for m in hcl.get("moved", [])}
    for rtype, name, _ in groups:
        assert (f"${{{rtype}.{name}}}", f"${{{rtype}.{name}[0]}}") in moved, f"{rtype}.{name} would be recreated"
    rule = _labelled(hcl, "variable")["shared_security_groups"]["validation"][0]["condition"]
    assert 'toset(["ssh", "cluster"])' in rule


# --------------------------------------------------------------------------
# the state volume: its own module, attached by id
# --------------------------------------------------------------------------


def test_state_volume_is_never_in_the_main_module(hcl, state_hcl):
    """terraform destroy of the cluster must not be able to delete the state."""
    main_types = {t for t, _, _ in _resources(hcl)} | {t for t, _, _ in _resources(hcl, "data")}
    assert not {t for t in main_types if t.startswith("openstack_blockstorage")}, "a volume in the main module"
    assert "module" not in hcl, "the main module must not call the state module (destroy would reach it)"
    (volume,) = [(t, n, b) for t, n, b in _resources(state_hcl)]
    rtype, _, body = volume
    assert rtype == "openstack_blockstorage_volume_v3"
    (lifecycle,) = body["lifecycle"]
    assert lifecycle["prevent_destroy"] is True
    assert body["name"] == "servicetime-${var.user}-state"
    assert body["size"] == "${var.size_gb}"
    variables = _labelled(state_hcl, "variable")
    assert variables["size_gb"]["default"] == 50
    assert "quota" in variables["size_gb"]["description"]
    for name, spec in variables.items():
        assert spec.get("description") and spec.get("type") and spec.get("validation"), name
    assert _labelled(hcl, "variable")["user"]["validation"] == variables["user"]["validation"]
    outputs = _labelled(state_hcl, "output")
    assert outputs["volume_id"]["value"] == "${openstack_blockstorage_volume_v3.state.id}"
    # the same provider, pinned the same way, from the same clouds.yaml
    (provider,) = [p["openstack"] for p in state_hcl["provider"]]
    assert provider == {"cloud": "${var.os_cloud}", "region": "${var.region}"}
    (main_tf,) = hcl["terraform"]
    (state_tf,) = state_hcl["terraform"]
    assert state_tf["required_version"] == main_tf["required_version"]
    assert state_tf["required_providers"][0]["openstack"] == main_tf["required_providers"][0]["openstack"]


def test_state_volume_is_attached_only_when_set(hcl):
    (attach,) = [(n, b) for t, n, b in _resources(hcl) if t == "openstack_compute_volume_attach_v2"]
    name, body = attach
    assert body["count"] == '${var.state_volume_id == "" ? 0 : 1}'
    assert body["volume_id"] == "${var.state_volume_id}"
    assert body["instance_id"] == '${openstack_compute_instance_v2.node["server"].id}', "the control plane only"
    args = _templatefile_args()
    assert args["state_volume"] == 'each.value.role == "server" ? var.state_volume_id : ""'
    assert args["state_path"] == "local.platform.state.host_path", "the path comes from platform.yaml"
    assert args["state_b64"] == 'filebase64("${path.module}/scripts/state-volume.sh")'
    # the device name the node waits for is the one Nova gives the volume
    script = (TF_DIR / "scripts" / "state-volume.sh").read_text()
    assert '/dev/disk/by-id/virtio-${STATE_VOLUME_ID:0:20}"' in script
    assert "defaults,nofail" in script


# --------------------------------------------------------------------------
# lease, instances, outputs, single source of truth
# --------------------------------------------------------------------------


def test_lease_is_created_and_destroyed_by_terraform(hcl):
    (lease,) = [b for t, n, b in _resources(hcl) if t == "terraform_data" and n == "lease"]
    provisioners = [p["local-exec"] for p in lease["provisioner"]]
    create = [p for p in provisioners if p.get("when") != "destroy"]
    destroy = [p for p in provisioners if p.get("when") == "destroy"]
    assert len(create) == len(destroy) == 1
    assert "lease.sh" in lease["input"]["script"]
    assert create[0]["command"].endswith(" create") and destroy[0]["command"].endswith(" delete")
    # destroy-time provisioners may only use self
    for value in destroy[0]["environment"].values():
        assert value.startswith("${self."), value
    (reader,) = [b for t, n, b in _resources(hcl, "data") if t == "external"]
    assert reader["program"][-1] == "show" and "lease.sh" in reader["program"][1]
    assert "terraform_data.lease" in reader["for_each"]
    flavor_ids = _locals(hcl)["flavor_ids"]
    assert "reservation_id" in flavor_ids and "data.external.lease" in flavor_ids


def test_instances_use_reserved_flavor_and_cloud_init(hcl):
    (node,) = [b for t, _, b in _resources(hcl) if t == "openstack_compute_instance_v2"]
    assert "local.flavor_ids" in node["flavor_id"]
    assert node["key_pair"] == "${var.key_pair}"
    assert "each.value.image" in node["image_name"]
    assert "templatefile(" in node["user_data"] and "node.yaml.tftpl" in node["user_data"]
    assert len(node["network"]) == 2
    variables = _labelled(hcl, "variable")
    assert variables["image"]["default"] == "CC-Ubuntu24.04"


EXPECTED_OUTPUTS = {
    "floating_ip",
    "ssh_command",
    "tunnel_command",
    "tunnel_commands",
    "ui_urls",
    "kfp_url",
    "kubeconfig_command",
    "cloud_init_wait_command",
    "bootstrap_command",
}


def test_expected_outputs(hcl):
    outputs = _labelled(hcl, "output")
    assert EXPECTED_OUTPUTS <= set(outputs), EXPECTED_OUTPUTS - set(outputs)
    for name, body in outputs.items():
        assert str(body.get("description", "")).strip(), f"output {name} has no description"
    ui = _locals(hcl)["ui_ports"]
    for key in ("kfp_ui", "mlflow", "grafana", "prometheus", "s3_console", "model_server"):
        assert f"local.ports.{key}" in str(ui), f"no tunnel for {key}"
    assert "6443" in outputs["tunnel_command"]["value"], "the k8s API needs a tunnel for the kubeconfig"
    assert "k3s.yaml" in outputs["kubeconfig_command"]["value"]


def _node(hcl: dict) -> dict:
    (node,) = [b for t, _, b in _resources(hcl) if t == "openstack_compute_instance_v2"]
    return node


def _templatefile_args() -> dict[str, str]:
    """{placeholder: expression} of the templatefile call in instances.tf."""
    instances = (TF_DIR / "instances.tf").read_text()
    call = instances[instances.index("templatefile(") :]
    body = call[: call.index("})")]
    return dict(re.findall(r"^\s*([a-z_0-9]+)\s*=\s*(.+?)\s*$", body, re.MULTILINE))


def test_routine_edits_do_not_rebuild_nodes(hcl):
    """user_data is ForceNew: a later change must not replace a running node."""
    (lifecycle,) = _node(hcl)["lifecycle"]
    assert "user_data" in lifecycle["ignore_changes"]
    # What changes with routine edits stays out of the agents' user data: the
    # node count and the repository only reach the control plane, the image
    # tag reaches no node (the bootstrap reads it from its checkout).
    args = _templatefile_args()
    for name in ("expected_nodes", "repo_url", "repo_ref", "prebuilt_image", "state_volume"):
        assert args[name].startswith('each.value.role == "server" ?'), f"{name} = {args[name]} reaches every node"
    user_data = _node(hcl)["user_data"]
    assert "image.tag" not in user_data and "local.platform.image" not in user_data
    assert "var.node_count" not in user_data


def test_nodes_are_replaced_with_their_lease(hcl):
    """flavor_id is not ForceNew: a new lease must replace the node, not resize
    it, and a node added next to it must replace nothing."""
    (lifecycle,) = _node(hcl)["lifecycle"]
    # never resized in place...
    assert "flavor_id" in lifecycle["ignore_changes"]
    # ...but replaced whenever the source of its reserved flavor changes
    (trigger,) = lifecycle["replace_triggered_by"]
    match = re.fullmatch(r"\$\{terraform_data\.(\w+)\[each\.key\]\}", trigger)
    assert match, f"replace_triggered_by must name one resource instance per node: {trigger}"
    (tracker,) = [b for t, n, b in _resources(hcl) if t == "terraform_data" and n == match.group(1)]
    node = _node(hcl)
    assert tracker["for_each"] == node["for_each"] == "${local.nodes}", "one tracker per node, always present"
    (lease,) = [b for t, n, b in _resources(hcl) if t == "terraform_data" and n == "lease"]
    # The tracker changes exactly when the node's lease is replaced. It must be
    # known at plan time: the lease data (hence every flavor id) is read during
    # apply as soon as any lease changes, and an unknown tracker would replace
    # every node whenever one is added.
    assert tracker["input"] == lease["triggers_replace"] == "${local.reservation_source[each.key]}"
    assert "flavor_ids" not in str(tracker) and "data.external" not in str(tracker)
    source = _locals(hcl)["reservation_source"]
    for fact in ("var.reservation_id", "node.flavor", "local.suffix", "${key}"):
        assert fact in source, f"reservation_source ignores {fact}"
    assert "data." not in source and "terraform_data." not in source
    assert node["flavor_id"] == "${local.flavor_ids[each.key]}"


def test_every_node_has_its_own_lease(hcl):
    """Blazar cannot resize a flavor reservation: one lease per node lets a node
    be added without replacing the lease (and every VM) of the others."""
    leases = _locals(hcl)["leases_to_create"]
    assert "local.nodes" in leases
    (lease,) = [b for t, n, b in _resources(hcl) if t == "terraform_data" and n == "lease"]
    (create,) = [p["local-exec"] for p in lease["provisioner"] if p["local-exec"].get("when") != "destroy"]
    assert str(create["environment"]["AMOUNT"]) == "1"
    assert create["environment"]["FLAVOR"] == "${each.value.flavor}"
    assert "amount" not in str(lease["triggers_replace"]) and "node_count" not in str(lease["triggers_replace"])
    assert "${each.key}" in lease["input"]["name"]
    nodes = _locals(hcl)["nodes"]
    assert nodes.count("flavor =") == 1, "every node names the flavor of its lease"


def _max_count(hcl: dict, name: str) -> int:
    condition = _labelled(hcl, "variable")[name]["validation"][0]["condition"]
    if m := re.search(rf"var\.{name} <= (\d+)", condition):
        return int(m.group(1))
    m = re.search(rf"contains\(\[([\d, ]+)\], var\.{name}\)", condition)
    assert m, condition
    return max(int(v) for v in m.group(1).split(","))


@pytest.mark.parametrize("cidr", [None, "10.20.0.0/16", "172.16.8.0/22"])
def test_fixed_node_addresses_lie_outside_the_allocation_pool(hcl, cidr):
    """Neutron gives the DHCP port an address from the pool; it must never be
    one that a node's port is created with later."""
    import ipaddress

    numbers = _locals(hcl)["host_numbers"]
    nodes = _locals(hcl)["nodes"]
    assert "cidrhost(var.private_cidr, local.host_numbers.cpu_first + i)" in nodes
    (subnet,) = [b for t, _, b in _resources(hcl) if t == "openstack_networking_subnet_v2"]
    (pool,) = subnet["allocation_pool"]
    assert pool == {
        "start": "${cidrhost(var.private_cidr, local.host_numbers.pool_start)}",
        "end": "${cidrhost(var.private_cidr, local.host_numbers.pool_end)}",
    }

    net = ipaddress.ip_network(cidr or _labelled(hcl, "variable")["private_cidr"]["default"])
    host = lambda n: net.network_address + n  # noqa: E731 - cidrhost()
    start, end = host(numbers["pool_start"]), host(numbers["pool_end"])
    assert net.network_address < start <= end < net.broadcast_address
    fixed = [host(numbers["cpu_first"] + i) for i in range(_max_count(hcl, "node_count"))]
    assert len(set(fixed)) == len(fixed), "two nodes share an address"
    for ip in fixed:
        assert ip in net and net.network_address < ip < net.broadcast_address, ip
        assert not start <= ip <= end, f"node address {ip} lies in the DHCP pool {start}-{end}"


def _forwarded_ports() -> dict[str, int]:
    """{platform port name: number} of every `forward` line in infra/port-forward.sh."""
    script = (ROOT / "infra" / "port-forward.sh").read_text()
    lines = re.findall(r"^forward\s+(.+?)\s*&?\s*$", script, re.MULTILINE)
    assert len(lines) >= 5, "infra/port-forward.sh forwards nothing?"
    forwarded = {}
    for line in lines:
        _namespace, _service, local_port, _remote = shlex.split(line)
        m = re.fullmatch(r"\$\(platform ports\.(\w+)\)", local_port)
        assert m, f"the local port of `forward {line}` must come from platform.yaml"
        forwarded[m.group(1)] = PLATFORM["ports"][m.group(1)]
    return forwarded


def test_tunnels_carry_exactly_what_is_forwarded(hcl):
    """The control plane forwards services to its 127.0.0.1; the tunnel must
    carry each of them and nothing else."""
    forwarded = _forwarded_ports()
    ui = _locals(hcl)["ui_ports"]
    names = {}
    for key, value in ui.items():
        m = re.fullmatch(r"\$\{local\.ports\.(\w+)\}", value)
        assert m, f"ui_ports.{key} = {value!r} must be a platform port"
        names[m.group(1)] = key
    assert len(names) == len(ui), "a port is tunnelled twice"
    assert set(names) == set(forwarded), (
        f"tunnelled but not forwarded: {set(names) - set(forwarded)}; forwarded but not tunnelled: "
        f"{set(forwarded) - set(names)}"
    )
    assert sorted(PLATFORM["ports"][n] for n in names) == sorted(forwarded.values())
    # every tunnel output is built from ui_ports
    assert "local.ui_ports" in _locals(hcl)["tunnel_args"]
    outputs = _labelled(hcl, "output")
    assert "local.tunnel_args" in outputs["tunnel_command"]["value"]
    for name in ("tunnel_commands", "ui_urls"):
        assert "local.ui_ports" in str(outputs[name]["value"]), name


def test_ssh_commands_use_a_per_deployment_known_hosts_file(hcl):
    """A floating IP recycled onto a new server must not trip StrictHostKeyChecking."""
    ssh_base = _locals(hcl)["ssh_base"]
    assert "StrictHostKeyChecking=accept-new" in ssh_base
    assert "UserKnownHostsFile=${local.known_hosts}" in ssh_base
    known_hosts = _locals(hcl)["known_hosts"]
    assert "path.module" in known_hosts and "/.known_hosts-" in known_hosts
    # one file per control-plane server, not per user: a rebuild starts afresh
    assert 'openstack_compute_instance_v2.node["server"].id' in known_hosts
    for name, body in _labelled(hcl, "output").items():
        value = str(body["value"])
        if re.search(r"(^|[^\w-])ssh ", value) or "ssh_target" in value:
            assert value.startswith("${local.ssh_base}") or "${local.ssh_base}" in value, (
                f"output {name} runs ssh without the deployment's known-hosts file"
            )


def test_bootstrap_command_reruns_the_handoff(hcl):
    """The command re-runs what cloud-init ran, detached, with today's node count."""
    value = _labelled(hcl, "output")["bootstrap_command"]["value"]
    assert value.startswith("${local.ssh_base} ${local.ssh_target} ")
    template = yaml.safe_load(render(TEMPLATE.read_text(), _template_vars("server")))
    handoff = "/usr/local/sbin/servicetime-bootstrap"
    assert [handoff] in template["runcmd"]
    assert f"{handoff} --detach" in value
    assert "SERVICETIME_EXPECTED_NODES=${length(local.nodes)}" in value
    assert "SERVICETIME_PREBUILT_IMAGE=${var.prebuilt_image}" in value
    script = (TF_DIR / "scripts" / "bootstrap-handoff.sh").read_text()
    assert '"${1:-}" = --detach' in script and "SERVICETIME_EXPECTED_NODES" in script
    assert "systemd-run" in script and "infra/bootstrap.sh" in script


def test_platform_facts_come_from_platform_yaml(hcl):
    platform = _locals(hcl)["platform"]
    assert "yamldecode(file(" in platform and "components/core/platform.yaml" in platform
    sources = [*TF_FILES, TEMPLATE]
    text = "\n".join(p.read_text() for p in sources)
    facts = [str(p) for p in PLATFORM["ports"].values()]
    facts += [PLATFORM["versions"]["k3s"], PLATFORM["image"]["repository"].split("/")[0]]
    for fact in facts:
        assert not re.search(rf"(?<![\w.]){re.escape(fact)}(?![\w.])", text), f"{fact!r} is written by hand"


# --------------------------------------------------------------------------
# cloud-init
# --------------------------------------------------------------------------


STATE_LABEL = f"{PLATFORM['state']['node_label']}=true"
VOLUME_ID = "3f2a9c4e-8b1d-4e6f-9a7c-1d2e3f4a5b6c"


def _template_vars(
    role: str, docker_mirror: str = "", state_volume: str = "", prebuilt_image: str = ""
) -> dict[str, str]:
    """The values instances.tf passes to templatefile, for one sample node."""
    server = role == "server"
    return {
        "role": role,
        "node_ip": "192.168.50.10" if role == "server" else "192.168.50.11",
        "node_mac": "fa:16:3e:00:00:01",
        "node_labels": STATE_LABEL if server else "",
        "private_prefix": "24",
        "private_mtu": "1450",
        "server_ip": "192.168.50.10",
        "expected_nodes": "3" if role == "server" else "0",
        "k3s_version": PLATFORM["versions"]["k3s"],
        "join_token": "abc123.0123456789abcdef",
        "registry_host": PLATFORM["image"]["repository"].split("/")[0],
        "registry_port": str(PLATFORM["ports"]["registry"]),
        "repo_url": "https://github.com/example/servicetime.git" if role == "server" else "",
        "repo_ref": "main" if role == "server" else "",
        "prebuilt_image": prebuilt_image if server else "",
        "state_volume": state_volume if server else "",
        "state_path": PLATFORM["state"]["host_path"],
        "docker_mirror": docker_mirror,
        "k3s_node_b64": base64.b64encode((TF_DIR / "scripts/k3s-node.sh").read_bytes()).decode(),
        "state_b64": base64.b64encode((TF_DIR / "scripts/state-volume.sh").read_bytes()).decode(),
        "handoff_b64": base64.b64encode((TF_DIR / "scripts/bootstrap-handoff.sh").read_bytes()).decode(),
    }


IF_BLOCK = re.compile(r'%\{ if ([a-z_]+) != "" ~\}\n(.*?)%\{ endif ~\}\n', re.DOTALL)


def render(template: str, values: dict[str, str]) -> str:
    """templatefile for the subset the templates use: ${name}, $${ escapes and
    `%{ if name != "" ~}...%{ endif ~}` on lines of their own (the Terraform
    test below checks that this renders exactly as templatefile does)."""
    template = IF_BLOCK.sub(lambda m: m.group(2) if values[m.group(1)] != "" else "", template)
    assert "%{" not in template, 'keep templates to ${name} and %{ if name != "" ~} blocks'

    def sub(match: re.Match) -> str:
        if match.group(0).startswith("$${"):
            return match.group(0)[1:]
        return values[match.group(1)]

    return re.sub(r"\$?\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}", sub, template)


def test_template_placeholders_are_passed_by_terraform():
    text = TEMPLATE.read_text()
    placeholders = set(re.findall(r"(?<!\$)\$\{\s*([A-Za-z_]\w*)\s*\}", text))
    placeholders |= {m.group(1) for m in IF_BLOCK.finditer(text)}
    instances = (TF_DIR / "instances.tf").read_text()
    call = instances[instances.index("templatefile(") :]
    passed = set(re.findall(r"^\s*([a-z_0-9]+)\s*=", call[: call.index("})")], re.MULTILINE))
    assert placeholders == passed == set(_template_vars("server"))


MIRROR = "https://mirror.example.edu:5000"


@pytest.mark.parametrize("docker_mirror", ["", MIRROR])
@pytest.mark.parametrize("role", ["server", "agent"])
def test_cloud_init_is_valid(role, docker_mirror, tmp_path):
    assert shutil.which("cloud-init"), "cloud-init is required (Debian package cloud-init)"
    values = _template_vars(role, docker_mirror=docker_mirror, state_volume=VOLUME_ID, prebuilt_image="ghcr.io/o/st:1")
    rendered = render(TEMPLATE.read_text(), values)
    assert "${" not in rendered
    assert rendered.startswith("#cloud-config\n")
    config = yaml.safe_load(rendered)

    files = {f["path"]: f for f in config["write_files"]}
    env = files["/etc/servicetime/cluster.env"]
    assert env["permissions"] == "0600", "the join token must not be world-readable"
    assert f'K3S_ROLE="{role}"' in env["content"]
    assert f'K3S_VERSION="{PLATFORM["versions"]["k3s"]}"' in env["content"]
    # the in-cluster registry always; Docker Hub through the mirror only when set
    registries = yaml.safe_load(files["/etc/rancher/k3s/registries.yaml"]["content"])
    endpoint = registries["mirrors"][values["registry_host"]]["endpoint"]
    assert endpoint == [f"http://{values['server_ip']}:{values['registry_port']}"]
    if docker_mirror:
        assert set(registries["mirrors"]) == {values["registry_host"], "docker.io"}
        assert registries["mirrors"]["docker.io"]["endpoint"] == [MIRROR]
    else:
        assert set(registries["mirrors"]) == {values["registry_host"]}
    # server-only facts reach the server only
    server = role == "server"
    assert ('PREBUILT_IMAGE="ghcr.io/o/st:1"' in env["content"]) == server
    assert (f'STATE_VOLUME_ID="{VOLUME_ID}"' in env["content"]) == server
    assert f'STATE_PATH="{PLATFORM["state"]["host_path"]}"' in env["content"]
    assert (f'NODE_LABELS="{STATE_LABEL}"' in env["content"]) == server
    for path, script in [
        ("/usr/local/sbin/servicetime-k3s", "k3s-node.sh"),
        ("/usr/local/sbin/servicetime-state", "state-volume.sh"),
        ("/usr/local/sbin/servicetime-bootstrap", "bootstrap-handoff.sh"),
    ]:
        assert files[path]["encoding"] == "b64"
        assert base64.b64decode(files[path]["content"]) == (TF_DIR / "scripts" / script).read_bytes()
    # keys first (a failed k3s install must not lock the project out), then k3s, then the platform
    commands = [" ".join(c) for c in config["runcmd"]]
    assert "cc-load-public-keys" in commands[0]
    assert commands[1:] == ["/usr/local/sbin/servicetime-k3s", "/usr/local/sbin/servicetime-bootstrap"]

    user_data = tmp_path / f"{role}.yaml"
    user_data.write_text(rendered)
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(user_data)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid" in result.stdout + result.stderr


def test_docker_mirror_reaches_every_node():
    assert _templatefile_args()["docker_mirror"] == "var.registry_mirror"


def test_public_keys_are_loaded_if_the_tool_exists(tmp_path):
    """cc-load-public-keys is Chameleon's; an image without it still boots."""
    config = yaml.safe_load(render(TEMPLATE.read_text(), _template_vars("agent")))
    shell, flag, script = config["runcmd"][0]
    assert (shell, flag) == ("sh", "-c")
    assert "[ -x /usr/local/bin/cc-load-public-keys ]" in script
    assert "su cc -c /usr/local/bin/cc-load-public-keys ||" in script, "its failure is reported, not fatal"
    # here, as on an image without the tool, it says so and succeeds
    if not Path("/usr/local/bin/cc-load-public-keys").exists():
        result = subprocess.run([shell, flag, script], capture_output=True, text=True, check=False)
        assert result.returncode == 0 and "only the key pair can log in" in result.stdout


@pytest.mark.parametrize(("role", "docker_mirror"), [("agent", ""), ("server", MIRROR)])
def test_python_render_matches_terraform_templatefile(tmp_path, role, docker_mirror):
    if TERRAFORM is None:
        pytest.skip("terraform binary not on PATH; the Python renderer is checked by the other tests")
    values = _template_vars(role, docker_mirror=docker_mirror, state_volume=VOLUME_ID)
    (tmp_path / "vars.json").write_text(json.dumps(values))
    (tmp_path / "main.tf").write_text(
        textwrap.dedent(
            f"""\
            output "rendered" {{
              value = templatefile({json.dumps(str(TEMPLATE))}, jsondecode(file("${{path.module}}/vars.json")))
            }}
            """
        )
    )
    # No providers: init and apply stay on this machine.
    for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        run = subprocess.run([TERRAFORM, *args], cwd=tmp_path, env=TF_ENV, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    out = subprocess.run(
        [TERRAFORM, "output", "-raw", "rendered"], cwd=tmp_path, env=TF_ENV, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == render(TEMPLATE.read_text(), values)


# --------------------------------------------------------------------------
# shell scripts
# --------------------------------------------------------------------------


def test_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck is required (Debian package shellcheck)"
    assert {p.name for p in SCRIPTS} >= {
        "lease.sh",
        "release.sh",
        "k3s-node.sh",
        "state-volume.sh",
        "bootstrap-handoff.sh",
    }
    result = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_executable_in_git():
    """Terraform runs them with bash, but people run them by path too."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-s", "terraform/scripts"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    modes = {line.split("\t")[1]: line.split()[0] for line in listed}
    assert modes, "no scripts tracked under terraform/scripts"
    for path, mode in modes.items():
        assert mode == "100755", f"{path} is not executable in git ({mode})"


def test_readme_names_only_real_outputs_and_variables(hcl):
    readme = (TF_DIR / "README.md").read_text()
    outputs = set(_labelled(hcl, "output"))
    named = set(re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", readme))
    named |= set(re.findall(r"-chdir=terraform output -raw ([a-z_]+)", readme))
    assert {"tunnel_command", "bootstrap_command", "kubeconfig_command"} <= named
    assert named <= outputs, f"README names outputs that do not exist: {named - outputs}"
    variables = set(_labelled(hcl, "variable"))
    for name in (
        "node_count",
        "server_flavor",
        "reservation_id",
        "lease_hours",
        "state_volume_id",
        "registry_mirror",
        "shared_security_groups",
        "prebuilt_image",
    ):
        assert f"`{name}" in readme and name in variables, name
    state_outputs = set(_labelled(_merged(STATE_TF_FILES), "output"))
    named_state = set(re.findall(r"-chdir=state output (?:-raw )?([a-z_]+)", readme))
    assert named_state and named_state <= state_outputs, named_state - state_outputs


FAKE_OPENSTACK = r'''#!/usr/bin/env python3
"""Just enough of `openstack` (with the Blazar plugin) for lease.sh and release.sh."""
import json, os, sys, uuid
state_file = os.environ["FAKE_OS_STATE"]
state = json.load(open(state_file)) if os.path.exists(state_file) else {"leases": {}, "calls": []}
for key in ("servers", "ports", "fips"):
    state.setdefault(key, [])
args = sys.argv[1:]
state["calls"].append(args)
def save():
    json.dump(state, open(state_file, "w"))
if os.environ.get("FAKE_OS_FAIL"):
    save(); print("auth failed", file=sys.stderr); sys.exit(1)
if os.environ.get("FAKE_OS_TRUST_403") and args[:3] == ["reservation", "lease", "create"]:
    save()
    print("ERROR: Using method 'application_credential' is not allowed for managing trusts. "
          "(HTTP 403) (Request-ID: req-0123)", file=sys.stderr)
    sys.exit(1)
if args[:2] == ["flavor", "show"]:
    print("flavor-" + args[2]); save(); sys.exit(0)
lists = {("server", "list"): "servers", ("port", "list"): "ports", ("floating", "ip"): "fips"}
if args[0] in ("server", "port", "floating"):
    kind = {"server": "servers", "port": "ports", "floating": "fips"}[args[0]]
    verb = args[2] if args[0] == "floating" else args[1]
    if verb == "list":
        print(json.dumps(state[kind]))
    elif verb == "delete":
        (target,) = [a for a in args[2:] if not a.startswith("--")][-1:]
        state[kind] = [r for r in state[kind] if r["ID"] != target]
    save(); sys.exit(0)
assert args[:2] == ["reservation", "lease"], args
verb, rest = args[2], args[3:]
if verb == "list":
    print(json.dumps([{"id": l["id"], "name": n} for n, l in state["leases"].items()]))
elif verb == "create":
    name = rest[-1]
    spec = rest[rest.index("--reservation") + 1]
    rid = str(uuid.uuid4())
    end = rest[rest.index("--end-date") + 1].replace(" ", "T") + ":00.000000"  # as Blazar prints it
    state["leases"][name] = {"id": str(uuid.uuid4()), "spec": spec, "polls": 0, "reservation_id": rid, "end": end}
elif verb == "show":
    (name, lease), = [(n, l) for n, l in state["leases"].items() if l["id"] == rest[0]]
    lease["polls"] += 1
    status = lease.get("status") or ("ACTIVE" if lease["polls"] > 2 else "PENDING")
    reservation = {"id": lease["reservation_id"], "resource_type": "flavor:instance",
                   "flavor_id": lease["reservation_id"], "amount": 3}
    # blazarclient 4.x prints reservations as JSON text, one object per line
    print(json.dumps({"id": lease["id"], "name": name, "status": status, "end_date": lease.get("end", ""),
                      "reservations": json.dumps(reservation, indent=4)}))
elif verb == "delete":
    state["leases"].pop(rest[0])
save()
'''


@pytest.fixture
def fake_openstack(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cli = bin_dir / "openstack"
    cli.write_text("#!" + sys.executable + "\n" + FAKE_OPENSTACK.split("\n", 1)[1])
    cli.chmod(cli.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / "state.json"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_OS_STATE": str(state),
        "LEASE_POLL_S": "0",
        "LEASE_WAIT_S": "30",
        "OS_CLOUD": "openstack",
    }
    return env, state


def _lease(cmd: str, env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(TF_DIR / "scripts" / "lease.sh"), cmd],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_lease_script_lifecycle(fake_openstack, tmp_path):
    env, state_file = fake_openstack
    lease_file = tmp_path / ".leases" / "servicetime-ab1234-server.json"
    env = {
        **env,
        "LEASE_NAME": "servicetime-ab1234-server",
        "LEASE_FILE": str(lease_file),
        "FLAVOR": "m1.large",
        "AMOUNT": "1",
        "HOURS": "24",
    }

    created = _lease("create", env)
    assert created.returncode == 0, created.stderr
    state = json.loads(state_file.read_text())
    lease = state["leases"]["servicetime-ab1234-server"]
    assert lease["spec"] == "resource_type=flavor:instance,flavor_id=flavor-m1.large,amount=1"
    (create_call,) = [c for c in state["calls"] if c[:3] == ["reservation", "lease", "create"]]
    assert "--end-date" in create_call
    facts = json.loads(lease_file.read_text())
    assert facts["status"] == "ACTIVE"
    assert facts["flavor_id"] == facts["reservation_id"] == lease["reservation_id"]
    # the end date, RFC 3339 in UTC, HOURS from now (lease_ends_at reads it)
    import datetime

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", facts["end_date"]), facts["end_date"]
    end = datetime.datetime.strptime(facts["end_date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    hours = (end - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 3600
    assert 23.9 < hours <= 24

    # a second create reuses the live lease instead of making another
    assert _lease("create", env).returncode == 0
    state = json.loads(state_file.read_text())
    assert sum(c[:3] == ["reservation", "lease", "create"] for c in state["calls"]) == 1

    query = json.dumps({"name": env["LEASE_NAME"], "file": str(lease_file), "cloud": "openstack", "region": "KVM@TACC"})
    shown = _lease("show", env, stdin=query)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["flavor_id"] == lease["reservation_id"]
    lease_file.unlink()  # a fresh checkout: show asks Blazar and rewrites the file
    shown = _lease("show", env, stdin=query)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["flavor_id"] == lease["reservation_id"]
    assert lease_file.exists()
    # a file written before end_date was recorded is read again from Blazar
    old = {k: v for k, v in facts.items() if k != "end_date"}
    lease_file.write_text(json.dumps(old))
    shown = _lease("show", env, stdin=query)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["end_date"] == facts["end_date"]
    assert json.loads(lease_file.read_text())["end_date"] == facts["end_date"]

    deleted = _lease("delete", env)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(state_file.read_text())["leases"] == {}
    assert not lease_file.exists()
    assert _lease("delete", env).returncode == 0, "deleting twice is fine"


def test_lease_ends_at_is_the_first_lease_end(hcl):
    value = _labelled(hcl, "output")["lease_ends_at"]["value"]
    assert "data.external.lease" in value and 'lookup(lease.result, "end_date", "")' in value
    assert value.startswith("${try(sort(compact(") and value.endswith('))[0], "")}'), "the earliest, or empty"


def test_lease_delete_fails_loudly_when_the_api_fails(fake_openstack):
    env, _ = fake_openstack
    env = {**env, "LEASE_NAME": "servicetime-ab1234-server", "FAKE_OS_FAIL": "1"}
    result = _lease("delete", env)
    assert result.returncode != 0, "an API failure must not pass for an already deleted lease"
    assert "already gone" not in result.stderr


def test_lease_show_says_how_to_recreate_a_lost_lease(fake_openstack, tmp_path):
    env, _ = fake_openstack
    name = "servicetime-ab-12-agent-2"  # a user name with a dash
    query = json.dumps({"name": name, "file": str(tmp_path / "gone.json"), "cloud": "openstack", "region": "KVM@TACC"})
    result = _lease("show", env, stdin=query)
    assert result.returncode != 0
    assert """-replace='terraform_data.lease["agent-2"]'""" in result.stderr
    assert """-replace='openstack_compute_instance_v2.node["agent-2"]'""" in result.stderr


def test_lease_create_explains_a_refused_trust(fake_openstack, tmp_path):
    """A restricted application credential cannot create the trust Blazar needs:
    the script must say what to do, not just pass Keystone's 403 on."""
    env, state_file = fake_openstack
    lease_file = tmp_path / ".leases" / "servicetime-ab1234-server.json"
    env = {
        **env,
        "LEASE_NAME": "servicetime-ab1234-server",
        "LEASE_FILE": str(lease_file),
        "FLAVOR": "m1.large",
        "AMOUNT": "1",
        "HOURS": "24",
        "FAKE_OS_TRUST_403": "1",
    }
    result = _lease("create", env)
    assert result.returncode != 0
    message = result.stderr
    assert "not allowed for managing trusts" in message, "Keystone's own words are kept"
    assert "Unrestricted" in message and "Application Credentials" in message
    assert "reservation_id" in message and "terraform.tfvars" in message
    assert "m1.large" in message
    assert not lease_file.exists()
    state = json.loads(state_file.read_text())
    assert state["leases"] == {}
    assert sum(c[:3] == ["reservation", "lease", "create"] for c in state["calls"]) == 1, "no retry loop"


def test_lease_create_reports_other_failures_plainly(fake_openstack, tmp_path):
    env, _ = fake_openstack
    env = {
        **env,
        "LEASE_NAME": "servicetime-ab1234-server",
        "LEASE_FILE": str(tmp_path / "lease.json"),
        "FLAVOR": "m1.large",
        "AMOUNT": "1",
        "HOURS": "24",
        "FAKE_OS_FAIL": "1",
    }
    result = _lease("create", env)
    assert result.returncode != 0
    assert "Unrestricted" not in result.stderr, "only a refused trust gets the credential advice"


def _world(user: str, lease_status: str, server_status: str | None, owner: str) -> dict:
    """One deployment as the cloud sees it: leases, instances, ports, floating IP."""
    s = f"servicetime-{user}"
    world = {"leases": {}, "calls": [], "servers": [], "ports": [], "fips": []}
    for key in ("server", "agent-1"):
        world["leases"][f"{s}-{key}"] = {"id": f"{user}-lease-{key}", "polls": 9, "status": lease_status,
                                         "reservation_id": f"{user}-res-{key}", "end": ""}
        if server_status is not None:
            world["servers"].append({"ID": f"{user}-vm-{key}", "Name": f"{s}-{key}", "Status": server_status})
        for net in ("shared", "private"):
            world["ports"].append({"ID": f"{user}-port-{key}-{net}", "Name": f"{s}-{key}-{net}", "Device Owner": owner})
    world["fips"].append(
        {
            "ID": f"{user}-fip",
            "Floating IP Address": "129.114.0.7",
            "Port": f"{user}-port-server-shared",
            "Description": f"{s} control plane",
        }
    )
    return world


def _release(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(TF_DIR / "scripts" / "release.sh"), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture
def dead_and_alive(fake_openstack):
    """ab1234's leases ended (one VM lingers in ERROR, ports and the IP stay);
    ab1234-2's cluster, whose names start the same way, is alive."""
    env, state_file = fake_openstack
    dead = _world("ab1234", "TERMINATED", None, "")
    dead["servers"].append({"ID": "ab1234-vm-agent-1", "Name": "servicetime-ab1234-agent-1", "Status": "ERROR"})
    dead["ports"][2]["Device Owner"] = "compute:nova"  # still bound to the ERROR VM
    alive = _world("ab1234-2", "ACTIVE", "ACTIVE", "compute:nova")
    world = {key: (dead[key] | alive[key] if key == "leases" else dead[key] + alive[key]) for key in dead}
    state_file.write_text(json.dumps(world))
    return env, state_file, world


def test_release_is_a_dry_run_by_default(dead_and_alive):
    env, state_file, world = dead_and_alive
    result = _release(env, "ab1234")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "would delete floating ip 129.114.0.7" in out
    assert "would delete instance servicetime-ab1234-agent-1 (status ERROR, lease TERMINATED)" in out
    assert out.count("would delete port ") == 4
    assert "ab1234-2" not in out, "another user's resources are not even listed"
    assert "dry run: nothing deleted" in out
    after = json.loads(state_file.read_text())
    assert {k: after[k] for k in ("servers", "ports", "fips")} == {k: world[k] for k in ("servers", "ports", "fips")}
    assert not [c for c in after["calls"] if "delete" in c]


def test_release_deletes_exactly_what_the_dead_lease_left(dead_and_alive):
    env, state_file, world = dead_and_alive
    result = _release(env, "ab1234", "--yes")
    assert result.returncode == 0, result.stderr
    after = json.loads(state_file.read_text())
    for kind in ("servers", "ports", "fips"):
        left = {r["ID"] for r in after[kind]}
        assert left == {r["ID"] for r in world[kind] if r["ID"].startswith("ab1234-2-")}, kind
    deletes = [c for c in after["calls"] if "delete" in c]
    kinds = [c[0] for c in deletes]
    assert kinds == ["floating", "server", "port", "port", "port", "port"], "IP first, then the VM, then its ports"
    assert ["server", "delete", "--wait", "ab1234-vm-agent-1"] in deletes
    assert "deleted floating ip 129.114.0.7" in result.stdout
    assert _release(env, "ab1234").stdout.strip() == "nothing of servicetime-ab1234 is left behind"


def test_release_keeps_a_live_cluster(dead_and_alive):
    env, state_file, world = dead_and_alive
    result = _release(env, "ab1234-2", "--yes")
    assert result.returncode == 0, result.stderr
    assert "nothing to release: everything above serves a live node" in result.stdout
    assert "keeping instance servicetime-ab1234-2-server (ACTIVE, lease ACTIVE)" in result.stdout
    after = json.loads(state_file.read_text())
    assert not [c for c in after["calls"] if "delete" in c]


def test_release_reads_the_user_and_fails_loudly(fake_openstack, tmp_path):
    env, _ = fake_openstack
    # without a user (and no terraform.tfvars next to the script) it refuses
    copy = tmp_path / "tf" / "scripts"
    copy.mkdir(parents=True)
    shutil.copy(TF_DIR / "scripts" / "release.sh", copy)
    result = subprocess.run(["bash", str(copy / "release.sh")], env=env, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "give your user name" in result.stderr
    (tmp_path / "tf" / "terraform.tfvars").write_text('user     = "ab1234" # me\nkey_pair = "k"\n')
    result = subprocess.run(["bash", str(copy / "release.sh")], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "servicetime-ab1234 " in result.stdout
    # an API failure is not "nothing left"
    result = _release({**env, "FAKE_OS_FAIL": "1"}, "ab1234")
    assert result.returncode != 0 and "nothing" not in result.stdout


# k3s-node.sh in a sandbox: every command that would touch the machine is a
# stub that records its arguments; the file-system paths point into tmp_path.
NODE_STUBS = {
    "systemctl": """
        echo "systemctl $*" >>"$CALLS"
        if [ "$1" = list-unit-files ]; then
          for unit in $FAKE_UNITS; do
            [ "$unit.service" = "$3" ] && echo "$unit.service enabled enabled"
          done
        fi
        exit 0
    """,
    "ufw": 'echo "ufw $*" >>"$CALLS"',
    "ip": """
        # ip -4 -o addr show dev IFACE
        if [ -e "$SANDBOX/dhcp-up" ] || [ -e "$SANDBOX/netplan-applied" ]; then
          echo "3: $6    inet $FAKE_NODE_IP/24 brd 192.168.50.255 scope global $6"
        fi
    """,
    "netplan": 'echo "netplan $*" >>"$CALLS"; touch "$SANDBOX/netplan-applied"',
    "curl": """
        echo "curl $*" >>"$CALLS"
        while [ $# -gt 0 ]; do
          if [ "$1" = -o ]; then echo '#!/bin/sh' >"$2"; fi
          shift
        done
    """,
    "sh": 'shift; echo "install $* K3S_URL=${K3S_URL:-} K3S_TOKEN=${K3S_TOKEN:-}" >>"$CALLS"',  # sh INSTALLER ARGS
    "sleep": "exit 0",
    "servicetime-state": 'echo "state $*" >>"$CALLS"',  # state-volume.sh, tested on its own below
}


def _run_node_script(
    tmp_path: Path, role: str, dhcp: bool, units: str = "firewalld ufw"
) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    sandbox = tmp_path / "node"
    bin_dir, net, netplan = sandbox / "bin", sandbox / "net", sandbox / "netplan"
    for d in (bin_dir, net / "eth0", net / "eth1", netplan):
        d.mkdir(parents=True)
    (net / "eth0" / "address").write_text("fa:16:3e:aa:aa:aa\n")
    (net / "eth1" / "address").write_text("fa:16:3e:00:00:01\n")
    (sandbox / "hosts").write_text("127.0.0.1 localhost\n")
    if dhcp:
        (sandbox / "dhcp-up").touch()
    for name, body in NODE_STUBS.items():
        stub = bin_dir / name
        stub.write_text("#!/bin/bash\n" + textwrap.dedent(body).strip() + "\n")
        stub.chmod(0o755)

    values = _template_vars(role)
    rendered = yaml.safe_load(render(TEMPLATE.read_text(), values))
    (env_file,) = [f for f in rendered["write_files"] if f["path"] == "/etc/servicetime/cluster.env"]
    (sandbox / "cluster.env").write_text(env_file["content"])
    calls = sandbox / "calls.log"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(calls),
        "SANDBOX": str(sandbox),
        "FAKE_UNITS": units,  # installed systemd units
        "FAKE_NODE_IP": values["node_ip"],
        "SERVICETIME_SYS_NET": str(net),
        "SERVICETIME_NETPLAN_DIR": str(netplan),
        "SERVICETIME_HOSTS_FILE": str(sandbox / "hosts"),
        "SERVICETIME_STATE_SETUP": str(bin_dir / "servicetime-state"),
    }
    result = subprocess.run(
        ["bash", str(TF_DIR / "scripts" / "k3s-node.sh"), str(sandbox / "cluster.env")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, calls.read_text().splitlines() if calls.exists() else [], sandbox


@pytest.mark.parametrize("role", ["server", "agent"])
def test_node_script_turns_host_firewalls_off_before_k3s(tmp_path, role):
    result, calls, sandbox = _run_node_script(tmp_path, role, dhcp=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (install,) = [i for i, c in enumerate(calls) if c.startswith("install ")]
    (download,) = [i for i, c in enumerate(calls) if c.startswith("curl ")]
    for unit in ("firewalld", "ufw"):
        stop = calls.index(f"systemctl disable --now {unit}.service")
        mask = calls.index(f"systemctl mask {unit}.service")
        assert stop < mask < download < install, calls
    assert calls.index("ufw disable") < install
    # and k3s itself is installed as asked, on the private interface
    assert f"--node-ip {_template_vars(role)['node_ip']} --flannel-iface eth1" in calls[install]
    if role == "server":  # k3s makes its own server token, which never leaves the control plane
        assert calls[install].startswith("install server ") and calls[install].endswith("K3S_URL= K3S_TOKEN=")
    else:  # an agent joins with the bootstrap token only
        assert calls[install].startswith("install agent ")
        assert calls[install].endswith(f"K3S_URL=https://{_template_vars(role)['server_ip']}:6443 "
                                       f"K3S_TOKEN={_template_vars(role)['join_token']}")
    registry = PLATFORM["image"]["repository"].split(":")[0]
    assert f"{_template_vars(role)['server_ip']} {registry}" in (sandbox / "hosts").read_text()
    assert not list((sandbox / "netplan").iterdir()), "DHCP configured the NIC: no netplan file"
    # the state folder is in place before k3s, on the control plane only, and
    # only the control plane carries the label that pins stateful pods
    state = [i for i, c in enumerate(calls) if c.startswith("state ")]
    if role == "server":
        assert state == [state[0]] and state[0] < download < install, calls
        assert calls[state[0]] == f"state {sandbox / 'cluster.env'}"
        assert f"--node-label {STATE_LABEL}" in calls[install]
    else:
        assert not state and "--node-label" not in calls[install]


def test_state_label_is_on_the_control_plane_only(hcl):
    nodes = _locals(hcl)["nodes"]
    assert 'labels = i == 0 ? "${local.platform.state.node_label}=true" : ""' in nodes
    assert 'role = i == 0 ? "server" : "agent"' in nodes
    assert _templatefile_args()["node_labels"] == "each.value.labels"
    script = (TF_DIR / "scripts" / "k3s-node.sh").read_text()
    assert 'args+=(--node-label "$label")' in script


def test_node_script_without_firewalls_installed(tmp_path):
    """An image without firewalld is fine too: nothing to stop or mask."""
    result, calls, _ = _run_node_script(tmp_path, "agent", dhcp=True, units="")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [c for c in calls if c.startswith("systemctl mask")]
    assert any(c.startswith("install agent ") for c in calls)


def test_node_script_pins_address_and_mtu_without_dhcp(tmp_path):
    result, calls, sandbox = _run_node_script(tmp_path, "agent", dhcp=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (netplan_file,) = (sandbox / "netplan").iterdir()
    config = yaml.safe_load(netplan_file.read_text())
    eth1 = config["network"]["ethernets"]["eth1"]
    assert eth1["dhcp4"] is False
    assert eth1["mtu"] == int(_template_vars("agent")["private_mtu"]) == 1450
    assert eth1["addresses"] == [f"{_template_vars('agent')['node_ip']}/24"]
    assert calls.index("netplan apply") < [i for i, c in enumerate(calls) if c.startswith("install ")][0]
    assert stat.S_IMODE(netplan_file.stat().st_mode) == 0o600


# state-volume.sh in a sandbox (SERVICETIME_ROOT): the disk is a file behind
# a /dev/disk/by-id link; blkid reports what mkfs.ext4 wrote (a marker file).
STATE_STUBS = {
    "blkid": """
        echo "blkid $*" >>"$CALLS"
        disk="${@: -1}"
        if [ -n "${FAKE_BLKID_RC:-}" ]; then exit "$FAKE_BLKID_RC"; fi
        [ -s "$disk" ] || exit 2
        cat "$disk"
    """,
    "mkfs.ext4": 'echo "mkfs.ext4 $*" >>"$CALLS"; echo ext4 >"${@: -1}"',
    "mount": 'echo "mount $*" >>"$CALLS"; touch "$SERVICETIME_ROOT/mounted"',
    "mountpoint": '[ -e "$SERVICETIME_ROOT/mounted" ]',
    "sleep": """
        echo sleep >>"$CALLS"
        n=$(grep -c '^sleep$' "$CALLS")
        if [ -n "${FAKE_APPEARS_AFTER:-}" ] && [ "$n" -ge "$FAKE_APPEARS_AFTER" ]; then
          ln -sf ../../vdb "$SERVICETIME_ROOT/dev/disk/by-id/virtio-${FAKE_SERIAL}"
        fi
    """,
}


@pytest.fixture
def state_node(tmp_path):
    root = tmp_path / "root"
    for d in ("bin", "etc/servicetime", "dev/disk/by-id"):
        (root / d).mkdir(parents=True)
    (root / "etc/fstab").write_text("LABEL=cloudimg-rootfs / ext4 defaults 0 1\n")
    (root / "dev/vdb").write_text("")  # a new, empty volume
    for name, body in STATE_STUBS.items():
        stub = root / "bin" / name
        stub.write_text("#!/bin/bash\n" + textwrap.dedent(body).strip() + "\n")
        stub.chmod(0o755)
    serial = VOLUME_ID[:20]

    def run(role="server", volume=VOLUME_ID, attached=True, **env):
        rendered = yaml.safe_load(render(TEMPLATE.read_text(), _template_vars(role, state_volume=volume)))
        (env_file,) = [f for f in rendered["write_files"] if f["path"] == "/etc/servicetime/cluster.env"]
        (root / "etc/servicetime/cluster.env").write_text(env_file["content"])
        link = root / "dev/disk/by-id" / f"virtio-{serial}"
        if attached and not link.is_symlink():
            link.symlink_to("../../vdb")
        result = subprocess.run(
            ["bash", str(TF_DIR / "scripts" / "state-volume.sh"), str(root / "etc/servicetime/cluster.env")],
            env={
                "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
                "SERVICETIME_ROOT": str(root),
                "CALLS": str(root / "calls.log"),
                "FAKE_SERIAL": serial,
                "SERVICETIME_STATE_WAIT_S": "20",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        calls = (root / "calls.log").read_text().splitlines() if (root / "calls.log").exists() else []
        return result, calls

    return root, run


STATE_PATH = PLATFORM["state"]["host_path"]


def test_state_volume_is_formatted_once_and_mounted(state_node):
    root, run = state_node
    device = f"/dev/disk/by-id/virtio-{VOLUME_ID[:20]}"
    result, calls = run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [c for c in calls if c.startswith("mkfs")] == [f"mkfs.ext4 -q -L servicetime {root / 'dev/vdb'}"]
    (mount,) = [c for c in calls if c.startswith("mount ")]
    assert mount == f"mount -t ext4 -o defaults {root}{device} {root}{STATE_PATH}"
    assert calls.index(next(c for c in calls if c.startswith("mkfs"))) < calls.index(mount)
    fstab = (root / "etc/fstab").read_text().splitlines()
    assert fstab[-1] == f"{root}{device} {STATE_PATH} ext4 defaults,nofail 0 2"
    dropin = root / "etc/systemd/system/k3s.service.d/servicetime-state.conf"
    assert f"RequiresMountsFor={STATE_PATH}" in dropin.read_text(), "k3s waits for the mount after a reboot"

    # run again (a re-run by hand): the file system is kept, fstab not doubled
    (root / "mounted").unlink()
    result, calls = run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len([c for c in calls if c.startswith("mkfs")]) == 1, "a volume with a file system is never formatted"
    assert "keeping it" in result.stdout
    assert (root / "etc/fstab").read_text().count(STATE_PATH) == 1


def test_state_volume_with_data_is_never_formatted(state_node):
    """The volume of the last cluster comes back: mount it as it is."""
    root, run = state_node
    (root / "dev/vdb").write_text("xfs")  # whatever file system it holds
    result, calls = run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [c for c in calls if c.startswith("mkfs")]
    assert [c for c in calls if c.startswith("mount ")][0].startswith("mount -t xfs ")
    assert (root / "dev/vdb").read_text() == "xfs"


@pytest.mark.parametrize(
    ("blkid_rc", "why"), [("4", "could not read"), ("8", "could not read"), ("0", "cannot name")]
)
def test_state_volume_is_not_formatted_when_blkid_is_unsure(state_node, blkid_rc, why):
    """Only blkid's 'no signature at all' (status 2) allows mkfs; an error, an
    ambiguous probe or a signature that is not a file system stops k3s."""
    root, run = state_node
    result, calls = run(FAKE_BLKID_RC=blkid_rc)
    assert result.returncode != 0
    assert why in result.stderr
    assert not [c for c in calls if c.startswith(("mkfs", "mount "))]


def test_state_volume_is_waited_for(state_node):
    root, run = state_node
    result, calls = run(attached=False, FAKE_APPEARS_AFTER="3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls.count("sleep") == 3 and any(c.startswith("mount ") for c in calls)


def test_missing_state_volume_stops_before_k3s(state_node):
    """No silent fall-back to the root disk: the state would split in two."""
    root, run = state_node
    result, calls = run(attached=False)
    assert result.returncode != 0
    assert "did not appear" in result.stderr and "not installing k3s" in result.stderr
    assert not [c for c in calls if c.startswith(("blkid", "mkfs", "mount "))]
    assert not (root / STATE_PATH.lstrip("/")).exists()


def test_without_a_state_volume_the_folder_is_on_the_root_disk(state_node):
    root, run = state_node
    result, calls = run(volume="", attached=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / STATE_PATH.lstrip("/")).is_dir()
    assert not calls, "no disk is probed, formatted or mounted"
    assert STATE_PATH not in (root / "etc/fstab").read_text()


def test_state_script_does_nothing_on_agents(state_node):
    root, run = state_node
    result, calls = run(role="agent")
    assert result.returncode == 0, result.stderr
    assert not calls and not (root / STATE_PATH.lstrip("/")).exists()


# The bootstrap handoff in a sandbox (SERVICETIME_ROOT): systemd, kubectl, git
# and sudo are stubs; systemd-run starts the unit as a background process.
HANDOFF_STUBS = {
    "id": "echo 0",
    "install": 'echo "install $*" >>"$CALLS"',
    "sleep": "/bin/sleep 0.05",
    "kubectl": """
        if [ "$1 $2" = "get nodes" ]; then
          ready="${FAKE_READY:-0}"  # the missing nodes join once the join token exists
          if [ -e "$SERVICETIME_ROOT/join-open" ]; then ready="${FAKE_READY_AFTER_JOIN:-$ready}"; fi
          for i in $(seq 1 "$ready"); do echo "node-$i Ready <none> 1m v1"; done
        fi
    """,
    "k3s": """
        echo "k3s $*" >>"$CALLS"
        case "$1 $2" in
        "token create") touch "$SERVICETIME_ROOT/join-open" ;;
        "token delete") rm -f "$SERVICETIME_ROOT/join-open" ;;
        "token list") exit 0 ;;
        esac
    """,
    "sudo": """
        [ "$1" = -u ] && shift 2
        [ "$1" = -H ] && shift
        exec "$@"
    """,
    "git": """
        echo "git $*" >>"$CALLS"
        if [ "$1" = clone ]; then
          dir="${@: -1}"
          mkdir -p "$dir/.git" "$dir/infra"
          {
            echo '#!/bin/sh'
            echo 'echo "platform bootstrap ran, PREBUILT_IMAGE=${PREBUILT_IMAGE-unset}"'
            echo 'exit ${FAKE_BOOTSTRAP_RC:-0}'
          } >"$dir/infra/bootstrap.sh"
          chmod +x "$dir/infra/bootstrap.sh"
        fi
    """,
    "systemctl": """
        [ "$1" = is-active ] && [ -e "$SERVICETIME_ROOT/unit-active" ]
    """,
    "systemd-run": """
        echo "systemd-run $*" >>"$CALLS"
        envs=()
        while [ $# -gt 0 ]; do
          case "$1" in
          --setenv=*) envs+=("${1#--setenv=}") ;;
          --*) ;;
          *) break ;;
          esac
          shift
        done
        touch "$SERVICETIME_ROOT/unit-active"
        ( env "${envs[@]}" "$@" >/dev/null 2>&1; rm -f "$SERVICETIME_ROOT/unit-active" ) &
    """,
}


@pytest.fixture
def handoff(tmp_path):
    root = tmp_path / "root"
    for d in ("bin", "var/log", "run", "etc/servicetime", "etc/rancher/k3s", "home/cc"):
        (root / d).mkdir(parents=True)
    for name, body in HANDOFF_STUBS.items():
        stub = root / "bin" / name
        stub.write_text("#!/bin/bash\n" + textwrap.dedent(body).strip() + "\n")
        stub.chmod(0o755)
    (root / "etc/rancher/k3s/k3s.yaml").write_text("apiVersion: v1\n")

    def write_env(role: str, prebuilt_image: str = "") -> None:
        rendered = yaml.safe_load(render(TEMPLATE.read_text(), _template_vars(role, prebuilt_image=prebuilt_image)))
        (env_file,) = [f for f in rendered["write_files"] if f["path"] == "/etc/servicetime/cluster.env"]
        (root / "etc/servicetime/cluster.env").write_text(env_file["content"])

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(TF_DIR / "scripts" / "bootstrap-handoff.sh"), *args],
            env={
                "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
                "SERVICETIME_ROOT": str(root),
                "CALLS": str(root / "calls.log"),
                "FAKE_READY": "3",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    write_env("server")
    return root, run, write_env


def test_handoff_first_run_clones_and_bootstraps(handoff):
    root, run, _ = handoff
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (root / "calls.log").read_text()
    vars_ = _template_vars("server")
    assert f"git clone --branch {vars_['repo_ref']} {vars_['repo_url']}" in calls
    log = (root / "var/log/servicetime-bootstrap.log").read_text()
    assert "expecting 3 node(s)" in log and "platform bootstrap ran" in log
    assert (root / "run/servicetime-bootstrap.status").read_text().strip() == "0"


def test_the_agents_join_token_is_open_only_while_nodes_are_missing(handoff):
    root, run, _ = handoff
    token = _template_vars("server")["join_token"]
    result = run(FAKE_READY="1", FAKE_READY_AFTER_JOIN="3")
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (root / "calls.log").read_text().splitlines()
    create = next(i for i, c in enumerate(calls) if c.startswith(f"k3s token create {token} --ttl 2h"))
    delete = calls.index(f"k3s token delete {token.split('.')[0]}")
    clone = next(i for i, c in enumerate(calls) if c.startswith("git clone"))
    assert create < delete < clone and not (root / "join-open").exists()
    # A run with every node Ready opens nothing, and still makes sure the token is gone.
    (root / "calls.log").unlink()
    assert run().returncode == 0
    calls = (root / "calls.log").read_text()
    assert "k3s token create" not in calls and f"k3s token delete {token.split('.')[0]}" in calls


def test_no_node_gets_the_server_token(hcl):
    for role in ("server", "agent"):
        rendered = render(TEMPLATE.read_text(), _template_vars(role))
        assert "K3S_TOKEN=" not in rendered and f'K3S_JOIN_TOKEN="{_template_vars(role)["join_token"]}"' in rendered
    passwords = {name: body for rtype, name, body in _resources(hcl) if rtype == "random_password"}
    assert set(passwords) == {"join_id", "join_secret"}  # no server token is made here
    assert passwords["join_id"]["length"] == 6 and passwords["join_secret"]["length"] == 16
    assert all(b["upper"] is False and b["special"] is False for b in passwords.values())  # [a-z0-9]


def test_handoff_passes_a_prebuilt_image_only_when_set(handoff):
    root, run, write_env = handoff
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    log = (root / "var/log/servicetime-bootstrap.log").read_text()
    assert "PREBUILT_IMAGE=unset" in log, "no image: the bootstrap builds as before"

    write_env("server", prebuilt_image="ghcr.io/org/servicetime:0.1.0")
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    log = (root / "var/log/servicetime-bootstrap.log").read_text()
    assert "PREBUILT_IMAGE=ghcr.io/org/servicetime:0.1.0" in log

    # the re-run carries today's terraform.tfvars, an empty value included
    rerun = run("--detach", SERVICETIME_PREBUILT_IMAGE="")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "PREBUILT_IMAGE=unset" in rerun.stdout
    rerun = run("--detach", SERVICETIME_PREBUILT_IMAGE="ghcr.io/org/servicetime:0.2.0")
    assert "PREBUILT_IMAGE=ghcr.io/org/servicetime:0.2.0" in rerun.stdout
    assert "--setenv=SERVICETIME_PREBUILT_IMAGE=ghcr.io/org/servicetime:0.2.0" in (root / "calls.log").read_text()


def test_handoff_does_nothing_on_agents(handoff):
    root, run, write_env = handoff
    write_env("agent")
    result = run()
    assert result.returncode == 0, result.stderr
    assert not (root / "calls.log").exists() and not (root / "var/log/servicetime-bootstrap.log").exists()


def test_bootstrap_rerun_is_detached_and_reports_its_end(handoff):
    root, run, _ = handoff
    assert run().returncode == 0
    # a node was added since the first boot: the caller passes today's count
    rerun = run("--detach", SERVICETIME_EXPECTED_NODES="4", FAKE_READY="4")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "expecting 4 node(s)" in rerun.stdout and "platform bootstrap ran" in rerun.stdout
    assert "expecting 3 node(s)" not in rerun.stdout, "only this run's log is shown"
    assert rerun.stdout.rstrip().endswith("servicetime-bootstrap: finished")
    calls = (root / "calls.log").read_text()
    assert "--unit=servicetime-bootstrap" in calls and "--setenv=SERVICETIME_EXPECTED_NODES=4" in calls
    assert "pull --ff-only" in calls, "the re-run updates the checkout"

    failed = run("--detach", FAKE_BOOTSTRAP_RC="3")
    assert failed.returncode == 1
    assert "failed (status 3)" in failed.stdout


def test_bootstrap_rerun_follows_a_running_one(handoff):
    root, run, _ = handoff
    lock = root / "run/servicetime-bootstrap.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "1.5"])  # cloud-init's first run
    try:
        for _ in range(100):
            if subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0:
                break
        result = run("--detach")
    finally:
        holder.wait(timeout=10)
    assert "already running; following it" in result.stdout
    assert "systemd-run" not in ((root / "calls.log").read_text() if (root / "calls.log").exists() else "")
    # it came back once the running one ended (which wrote no status here)
    assert result.returncode == 1 and "status unknown" in result.stdout
    # and a direct second run refuses to start next to a running one
    holder = subprocess.Popen(["flock", str(lock), "sleep", "1"])
    try:
        for _ in range(100):
            if subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0:
                break
        second = run()
    finally:
        holder.wait(timeout=10)
    assert second.returncode == 1 and "not starting a second one" in second.stdout + second.stderr


# --------------------------------------------------------------------------
# formatting and ignored files
# --------------------------------------------------------------------------


def test_terraform_fmt():
    if TERRAFORM is None:
        pytest.skip("terraform binary not on PATH (install it to check formatting)")
    result = subprocess.run(
        [TERRAFORM, "fmt", "-check", "-recursive", "-diff", str(TF_DIR)],
        env=TF_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, "run `terraform fmt -recursive terraform/`\n" + result.stdout + result.stderr


@pytest.mark.parametrize(
    "path",
    [
        "terraform.tfvars",
        "clouds.yaml",
        "terraform.tfstate",
        "terraform.tfstate.backup",
        ".leases/x.json",
        ".terraform/x",
        ".known_hosts-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        "state/terraform.tfstate",
        "state/terraform.tfstate.backup",
        "state/.terraform/x",
        "state/terraform.tfvars",
    ],
)
def test_local_state_and_secrets_are_ignored(path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "-q", f"terraform/{path}"], cwd=ROOT, capture_output=True, check=False
    )
    assert result.returncode == 0, f"terraform/{path} is not git-ignored"
