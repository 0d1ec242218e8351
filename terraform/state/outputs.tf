output "volume_id" {
  description = "Put this into ../terraform.tfvars as state_volume_id."
  value       = openstack_blockstorage_volume_v3.state.id
}

output "device_path" {
  description = "Where the control plane sees the volume (virtio serial: the first 20 characters of the id)."
  value       = "/dev/disk/by-id/virtio-${substr(openstack_blockstorage_volume_v3.state.id, 0, 20)}"
}
