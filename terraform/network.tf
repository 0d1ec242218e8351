# Two NICs per node: sharednet1 (internet, SSH, the floating IP) and a private
# network that carries all cluster traffic (k3s API, flannel VXLAN, kubelet).

data "openstack_networking_network_v2" "sharednet1" {
  name = "sharednet1"
}

resource "openstack_networking_network_v2" "private" {
  name           = "${local.suffix}-net"
  admin_state_up = true
}

resource "openstack_networking_subnet_v2" "private" {
  name       = "${local.suffix}-subnet"
  network_id = openstack_networking_network_v2.private.id
  cidr       = var.private_cidr
  ip_version = 4
  # No gateway: the default route must stay on sharednet1.
  no_gateway  = true
  enable_dhcp = true

  # Neutron's own ports (DHCP) take addresses from here only, never a node's
  # fixed address (locals.tf: host_numbers).
  allocation_pool {
    start = cidrhost(var.private_cidr, local.host_numbers.pool_start)
    end   = cidrhost(var.private_cidr, local.host_numbers.pool_end)
  }
}

locals {
  # Neutron reports the network's MTU (1450 on VXLAN tenant networks); a node
  # that has to address its private NIC itself sets the same. private_mtu is
  # the fallback for a cloud that reports none.
  private_mtu = try(
    openstack_networking_network_v2.private.mtu > 0 ? openstack_networking_network_v2.private.mtu : var.private_mtu,
    var.private_mtu,
  )
}

# Only SSH is open to the world; the UIs are reached through SSH tunnels.
# Each user gets two groups, unless shared_security_groups names existing
# ones (a class in one project: Neutron's default quota is 10 groups).
locals {
  own_security_groups = length(var.shared_security_groups) == 0
  security_group_ids = local.own_security_groups ? tomap({
    ssh     = one(openstack_networking_secgroup_v2.ssh[*].id)
    cluster = one(openstack_networking_secgroup_v2.cluster[*].id)
  }) : tomap({ for key, group in data.openstack_networking_secgroup_v2.shared : key => group.id })
}

data "openstack_networking_secgroup_v2" "shared" {
  for_each = var.shared_security_groups

  name = each.value
}

resource "openstack_networking_secgroup_v2" "ssh" {
  count = local.own_security_groups ? 1 : 0

  name        = "${local.suffix}-ssh"
  description = "SSH from anywhere (servicetime, ${var.user})"
}

resource "openstack_networking_secgroup_rule_v2" "ssh" {
  count = local.own_security_groups ? 1 : 0

  security_group_id = openstack_networking_secgroup_v2.ssh[0].id
  direction         = "ingress"
  ethertype         = "IPv4"
  protocol          = "tcp"
  port_range_min    = 22
  port_range_max    = 22
  remote_ip_prefix  = "0.0.0.0/0"
}

# Everything between nodes, and nothing from outside the private network.
resource "openstack_networking_secgroup_v2" "cluster" {
  count = local.own_security_groups ? 1 : 0

  name        = "${local.suffix}-cluster"
  description = "All traffic inside the private cluster network (servicetime, ${var.user})"
}

resource "openstack_networking_secgroup_rule_v2" "cluster" {
  count = local.own_security_groups ? 1 : 0

  security_group_id = openstack_networking_secgroup_v2.cluster[0].id
  direction         = "ingress"
  ethertype         = "IPv4"
  remote_ip_prefix  = var.private_cidr
}

# The groups had no count before shared_security_groups: keep them in place.
moved {
  from = openstack_networking_secgroup_v2.ssh
  to   = openstack_networking_secgroup_v2.ssh[0]
}

moved {
  from = openstack_networking_secgroup_rule_v2.ssh
  to   = openstack_networking_secgroup_rule_v2.ssh[0]
}

moved {
  from = openstack_networking_secgroup_v2.cluster
  to   = openstack_networking_secgroup_v2.cluster[0]
}

moved {
  from = openstack_networking_secgroup_rule_v2.cluster
  to   = openstack_networking_secgroup_rule_v2.cluster[0]
}

resource "openstack_networking_port_v2" "shared" {
  for_each = local.nodes

  name               = "${local.suffix}-${each.key}-shared"
  network_id         = data.openstack_networking_network_v2.sharednet1.id
  security_group_ids = [local.security_group_ids.ssh]
  admin_state_up     = true
}

resource "openstack_networking_port_v2" "private" {
  for_each = local.nodes

  name               = "${local.suffix}-${each.key}-private"
  network_id         = openstack_networking_network_v2.private.id
  security_group_ids = [local.security_group_ids.cluster]
  admin_state_up     = true

  fixed_ip {
    subnet_id  = openstack_networking_subnet_v2.private.id
    ip_address = each.value.ip
  }
}

resource "openstack_networking_floatingip_v2" "server" {
  pool        = "public"
  description = "${local.suffix} control plane"
  port_id     = openstack_networking_port_v2.shared["server"].id
}
