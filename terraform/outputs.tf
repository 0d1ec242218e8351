locals {
  fip         = openstack_networking_floatingip_v2.server.address
  ssh_target  = "cc@${local.fip}"
  tunnel_args = [for name, port in local.ui_ports : "-L ${port}:127.0.0.1:${port}"]
}

output "floating_ip" {
  description = "Public address of the control-plane node."
  value       = local.fip
}

output "ssh_command" {
  description = "SSH into the control plane."
  value       = "${local.ssh_base} ${local.ssh_target}"
}

output "cloud_init_wait_command" {
  description = "Wait until k3s and the platform bootstrap have finished on the control plane."
  value       = "${local.ssh_base} ${local.ssh_target} 'cloud-init status --wait; sudo tail -n 20 /var/log/cloud-init-output.log'"
}

output "bootstrap_command" {
  description = "Re-run the platform bootstrap on the control plane (after adding a node, a new image tag, or a failed first run) with today's node count and prebuilt_image: pulls the repository checkout and runs infra/bootstrap.sh again in a systemd unit that survives a dropped SSH session, and follows its log. Safe to repeat."
  value       = "${local.ssh_base} ${local.ssh_target} 'sudo env SERVICETIME_EXPECTED_NODES=${length(local.nodes)} SERVICETIME_PREBUILT_IMAGE=${var.prebuilt_image} /usr/local/sbin/servicetime-bootstrap --detach'"
}

output "tunnel_command" {
  description = "One SSH tunnel for every UI, the S3 API, the model server and the Kubernetes API (leave it running)."
  value       = "${local.ssh_base} -N ${join(" ", local.tunnel_args)} -L 6443:127.0.0.1:6443 ${local.ssh_target}"
}

output "tunnel_commands" {
  description = "One SSH tunnel per forwarded service."
  value = {
    for name, port in local.ui_ports :
    name => "${local.ssh_base} -N -L ${port}:127.0.0.1:${port} ${local.ssh_target}"
  }
}

output "ui_urls" {
  description = "Addresses on this machine while the tunnel runs (the S3 API and the model server are APIs, not pages)."
  value       = { for name, port in local.ui_ports : name => "http://localhost:${port}" }
}

output "kfp_url" {
  description = "Kubeflow Pipelines UI/API through the tunnel."
  value       = "http://localhost:${local.ui_ports.kfp}"
}

output "kubeconfig_command" {
  description = "Fetch the kubeconfig; it points at 127.0.0.1:6443, reached through the tunnel."
  value       = "${local.ssh_base} ${local.ssh_target} 'sudo cat /etc/rancher/k3s/k3s.yaml' > kubeconfig.yaml && chmod 600 kubeconfig.yaml && export KUBECONFIG=$PWD/kubeconfig.yaml"
}

output "node_private_ips" {
  description = "Private cluster address of every node."
  value       = { for key, node in local.nodes : key => node.ip }
}

output "reserved_flavor_ids" {
  description = "Reserved flavor (= reservation) id of each node."
  value       = local.flavor_ids
}

output "lease_ends_at" {
  description = "When the first node's lease ends (RFC 3339, UTC): Blazar deletes that node then. Empty when reservation_id names a lease of your own (see openstack reservation lease show)."
  value       = try(sort(compact([for lease in data.external.lease : lookup(lease.result, "end_date", "")]))[0], "")
}

output "state_volume_device" {
  description = "Where the control plane sees the kept state volume, and where it mounts it; empty without state_volume_id."
  value       = var.state_volume_id == "" ? "" : "/dev/disk/by-id/virtio-${substr(var.state_volume_id, 0, 20)} on ${local.platform.state.host_path}"
}
