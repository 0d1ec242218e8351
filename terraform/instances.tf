# Agents join with a kubeadm-style bootstrap token ("<id>.<secret>", `k3s token create`) that the
# control plane's bootstrap creates while nodes are missing and deletes once all are Ready, so the
# copy the metadata service keeps in every node's user-data opens nothing afterwards. The server
# token, which would open everything, never leaves the control plane: k3s generates it there.
resource "random_password" "join_id" {
  length  = 6
  upper   = false
  special = false
}

resource "random_password" "join_secret" {
  length  = 16
  upper   = false
  special = false
}

resource "openstack_compute_instance_v2" "node" {
  for_each = local.nodes

  name       = "${local.suffix}-${each.key}"
  image_name = each.value.image
  # The reserved flavor carries the reservation: no scheduler hint is needed.
  flavor_id = local.flavor_ids[each.key]
  key_pair  = var.key_pair

  # sharednet1 first, so the default route (and the floating IP) is on it.
  network {
    port = openstack_networking_port_v2.shared[each.key].id
  }
  network {
    port = openstack_networking_port_v2.private[each.key].id
  }

  # Only what this node needs on its first boot. Cluster-wide facts that
  # routine edits change (node count, image tag) stay out of the agents' data;
  # the control plane's bootstrap reads the rest from its checkout of the repo
  # (components/core/platform.yaml), and `terraform output bootstrap_command`
  # re-runs it with today's node count.
  user_data = templatefile("${path.module}/cloud-init/node.yaml.tftpl", {
    role           = each.value.role
    node_ip        = each.value.ip
    node_mac       = openstack_networking_port_v2.private[each.key].mac_address
    node_labels    = each.value.labels
    private_prefix = split("/", var.private_cidr)[1]
    private_mtu    = local.private_mtu
    server_ip      = local.server_ip
    expected_nodes = each.value.role == "server" ? length(local.nodes) : 0
    k3s_version    = local.platform.versions.k3s
    join_token     = "${random_password.join_id.result}.${random_password.join_secret.result}"
    registry_host  = local.registry_host
    registry_port  = local.ports.registry
    repo_url       = each.value.role == "server" ? var.repo_url : ""
    repo_ref       = each.value.role == "server" ? var.repo_ref : ""
    prebuilt_image = each.value.role == "server" ? var.prebuilt_image : ""
    state_volume   = each.value.role == "server" ? var.state_volume_id : ""
    state_path     = local.platform.state.host_path
    docker_mirror  = var.registry_mirror
    k3s_node_b64   = filebase64("${path.module}/scripts/k3s-node.sh")
    state_b64      = filebase64("${path.module}/scripts/state-volume.sh")
    handoff_b64    = filebase64("${path.module}/scripts/bootstrap-handoff.sh")
  })

  metadata = {
    project = "servicetime"
    owner   = var.user
    role    = each.value.role
  }

  lifecycle {
    # user_data is ForceNew and only read on the first boot: a changed script
    # or node count must not rebuild a running node (and lose its data).
    # flavor_id is not ForceNew, but a new flavor means a new lease, and Blazar
    # deletes the VM with the old lease: never resize, replace the node when
    # its lease is replaced (and only then; adding a node re-reads every
    # lease, which must not look like a change to the others).
    ignore_changes       = [user_data, flavor_id]
    replace_triggered_by = [terraform_data.reservation[each.key]]
  }
}

# The kept state volume (state/, state_volume_id) on the control plane. Its
# node script waits for the disk, formats it only if it holds no file
# system, and mounts it at state.host_path before k3s starts. Destroying
# this detaches the volume; nothing in this module can delete it.
resource "openstack_compute_volume_attach_v2" "state" {
  count = var.state_volume_id == "" ? 0 : 1

  instance_id = openstack_compute_instance_v2.node["server"].id
  volume_id   = var.state_volume_id
}
