# The platform's state (MinIO, Postgres, the registry, Prometheus, KFP's
# database, generated credentials) on a Cinder volume that outlives every
# lease: the main module attaches it to the control plane by id
# (state_volume_id) and only detaches it on destroy. Created once per user.
resource "openstack_blockstorage_volume_v3" "state" {
  name        = "servicetime-${var.user}-state"
  description = "servicetime platform state of ${var.user}; kept across clusters"
  size        = var.size_gb
  # Growing it (a larger size_gb) works while it is attached.
  enable_online_resize = true

  metadata = {
    project = "servicetime"
    owner   = var.user
    role    = "state"
  }

  lifecycle {
    # Neither a stray `destroy` nor a change that would replace the volume
    # may delete the data: deleting it is a deliberate step (README.md).
    prevent_destroy = true
  }
}
