locals {
  # The one source of platform facts, shared with Python and the manifests.
  platform = yamldecode(file("${path.module}/../components/core/platform.yaml"))
  ports    = local.platform.ports

  # Every resource name carries this, so several users can share a project.
  suffix = "servicetime-${var.user}"

  # "host:port/name" -> "host:port": the registry the nodes mirror.
  registry_host = split("/", local.platform.image.repository)[0]

  # Host numbers in private_cidr. Nodes get fixed addresses (so cloud-init
  # knows the server before it exists) from cpu_first up (at most 20, see
  # node_count). Neutron's own ports (the DHCP server) draw from the pool
  # above them and never take a node's address.
  host_numbers = {
    cpu_first  = 10
    pool_start = 100
    pool_end   = 199
  }

  # Index 0 is the control plane; it holds the platform's state (state.tf)
  # and carries the label that pins stateful pods to it. Every node has its
  # own lease (lease.tf), hence its own flavor.
  nodes = {
    for i in range(var.node_count) : (i == 0 ? "server" : "agent-${i}") => {
      role   = i == 0 ? "server" : "agent"
      flavor = i == 0 && var.server_flavor != "" ? var.server_flavor : var.flavor
      image  = var.image
      ip     = cidrhost(var.private_cidr, local.host_numbers.cpu_first + i)
      labels = i == 0 ? "${local.platform.state.node_label}=true" : ""
    }
  }
  server_ip = local.nodes["server"].ip

  # Exactly what infra/port-forward.sh forwards to 127.0.0.1 on the control
  # plane, so one SSH tunnel reaches all of it (a test keeps the two equal).
  ui_ports = {
    kfp           = local.ports.kfp_ui
    mlflow        = local.ports.mlflow
    grafana       = local.ports.grafana
    prometheus    = local.ports.prometheus
    minio_s3      = local.ports.s3
    minio_console = local.ports.s3_console
    model_server  = local.ports.model_server
  }

  # A known-hosts file per control-plane server: a floating IP that comes back
  # on a new server (yours or anyone's) is a new host, not a changed key.
  known_hosts = "${abspath(path.module)}/.known_hosts-${openstack_compute_instance_v2.node["server"].id}"
  ssh_base    = "ssh -i ${var.ssh_private_key} -o UserKnownHostsFile=${local.known_hosts} -o StrictHostKeyChecking=accept-new"
}
