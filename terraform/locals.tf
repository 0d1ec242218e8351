locals {
  # The one source of platform facts, shared with Python and the manifests.
  platform = yamldecode(file("${path.module}/../components/platform.yaml"))
  ports    = local.platform.ports

  # Every resource name carries this, so several users can share a project.
  suffix = "servicetime-${var.user}"

  # "host:port/name" -> "host:port": the registry the nodes mirror.
  registry_host = split("/", local.platform.image.repository)[0]

  # CPU nodes first (index 0 is the control plane), then the optional GPU agent.
  # Fixed private addresses let cloud-init know the server before it exists.
  nodes = merge(
    {
      for i in range(var.node_count) : (i == 0 ? "server" : "agent-${i}") => {
        role   = i == 0 ? "server" : "agent"
        pool   = "cpu"
        image  = var.image
        ip     = cidrhost(var.private_cidr, 10 + i)
        labels = ""
      }
    },
    {
      for i in range(var.gpu_count) : "gpu-${i}" => {
        role   = "agent"
        pool   = "gpu"
        image  = var.gpu_image
        ip     = cidrhost(var.private_cidr, 200 + i)
        labels = "servicetime/gpu=true"
      }
    },
  )
  server_ip = local.nodes["server"].ip

  # The UIs: forwarded to 127.0.0.1 on the control plane (infra/port-forward.sh), reached by SSH tunnels.
  ui_ports = {
    kfp           = local.ports.kfp_ui
    mlflow        = local.ports.mlflow
    grafana       = local.ports.grafana
    prometheus    = local.ports.prometheus
    minio_console = local.ports.s3_console
    ray_dashboard = local.ports.ray_dashboard
  }
  ssh_base = "ssh -i ${var.ssh_private_key} -o StrictHostKeyChecking=accept-new"
}
