# KVM@TACC only schedules VMs on a reserved flavor, and the OpenStack provider
# cannot create Blazar leases: scripts/lease.sh does it with the openstack CLI.
# A reservation id given in terraform.tfvars skips creation for that pool.

locals {
  reservations = {
    for pool, r in {
      cpu = { flavor = var.flavor, amount = var.node_count, reservation_id = var.reservation_id }
      gpu = { flavor = var.gpu_flavor, amount = var.gpu_count, reservation_id = var.gpu_reservation_id }
    } : pool => r if r.amount > 0
  }
  leases_to_create = { for pool, r in local.reservations : pool => r if r.reservation_id == "" }
  lease_dir        = "${path.module}/.leases"

  # Blazar creates the reserved flavor with the reservation's id, so a given
  # reservation id is the flavor id.
  flavor_ids = merge(
    { for pool, r in local.reservations : pool => r.reservation_id if r.reservation_id != "" },
    { for pool, lease in data.external.lease : pool => lease.result.flavor_id },
  )
}

resource "terraform_data" "lease" {
  for_each = local.leases_to_create

  # A different flavor, size or owner needs a new lease (and new instances).
  triggers_replace = [each.value.flavor, each.value.amount, local.suffix]

  # The destroy provisioner may only read self, so it gets everything here.
  # Later edits are ignored: they would only re-read the same lease.
  input = {
    name   = "${local.suffix}-${each.key}"
    file   = "${local.lease_dir}/${local.suffix}-${each.key}.json"
    script = "${path.module}/scripts/lease.sh"
    cloud  = var.os_cloud
    region = var.region
  }

  provisioner "local-exec" {
    command = "bash '${self.input.script}' create"
    environment = {
      LEASE_NAME     = self.input.name
      LEASE_FILE     = self.input.file
      FLAVOR         = each.value.flavor
      AMOUNT         = each.value.amount
      HOURS          = var.lease_hours
      OS_CLOUD       = self.input.cloud
      OS_REGION_NAME = self.input.region
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "bash '${self.input.script}' delete"
    environment = {
      LEASE_NAME     = self.input.name
      LEASE_FILE     = self.input.file
      OS_CLOUD       = self.input.cloud
      OS_REGION_NAME = self.input.region
    }
  }

  lifecycle {
    ignore_changes = [input]
  }
}

# Reads the file lease.sh wrote (or asks Blazar again if it is missing). Its
# query depends on the lease's output, so on the first apply it runs after the
# lease exists: one apply is enough.
data "external" "lease" {
  for_each = terraform_data.lease

  program = ["bash", "${path.module}/scripts/lease.sh", "show"]
  query   = each.value.output
}
