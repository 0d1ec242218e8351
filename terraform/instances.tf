resource "random_password" "k3s_token" {
  length  = 48
  special = false
}

resource "openstack_compute_instance_v2" "node" {
  for_each = local.nodes

  name       = "${local.suffix}-${each.key}"
  image_name = each.value.image
  # The reserved flavor carries the reservation: no scheduler hint is needed.
  flavor_id = local.flavor_ids[each.value.pool]
  key_pair  = var.key_pair

  # sharednet1 first, so the default route (and the floating IP) is on it.
  network {
    port = openstack_networking_port_v2.shared[each.key].id
  }
  network {
    port = openstack_networking_port_v2.private[each.key].id
  }

  user_data = templatefile("${path.module}/cloud-init/node.yaml.tftpl", {
    role           = each.value.role
    node_ip        = each.value.ip
    node_mac       = openstack_networking_port_v2.private[each.key].mac_address
    node_labels    = each.value.labels
    private_prefix = split("/", var.private_cidr)[1]
    private_mtu    = local.private_mtu
    server_ip      = local.server_ip
    expected_nodes = length(local.nodes)
    k3s_version    = local.platform.versions.k3s
    k3s_token      = random_password.k3s_token.result
    registry_host  = local.registry_host
    registry_port  = local.ports.registry
    namespace      = local.platform.namespace
    image          = "${local.platform.image.repository}:${local.platform.image.tag}"
    repo_url       = var.repo_url
    repo_ref       = var.repo_ref
    k3s_node_b64   = filebase64("${path.module}/scripts/k3s-node.sh")
    handoff_b64    = filebase64("${path.module}/scripts/bootstrap-handoff.sh")
  })

  metadata = {
    project = "servicetime"
    owner   = var.user
    role    = each.value.role
  }
}
