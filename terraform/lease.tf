# KVM@TACC only schedules VMs on a reserved flavor, and the OpenStack provider
# cannot create Blazar leases: scripts/lease.sh does it with the openstack CLI.
#
# One lease (amount 1) per node: Blazar cannot resize a flavor reservation, so
# a lease per pool would have to be replaced, and every VM on it deleted, to
# add one node. This way adding or removing a node touches only that node.
# A reservation id given in terraform.tfvars replaces all of them.

locals {
  leases_to_create = var.reservation_id == "" ? local.nodes : {}
  lease_dir        = "${path.module}/.leases"

  # Where each node's reserved flavor comes from, known at plan time (the
  # flavor id itself is known only once the lease exists). Its lease is
  # replaced when this changes, and so is the node (instances.tf).
  # Keep the text stable: a changed text replaces every running node.
  reservation_source = {
    for key, node in local.nodes : key => (
      var.reservation_id != ""
      ? "reservation ${var.reservation_id}"
      : "lease ${local.suffix}-${key} of ${node.flavor}"
    )
  }

  # Blazar creates the reserved flavor with the reservation's id, so a given
  # reservation id is the flavor id.
  flavor_ids = merge(
    { for key, node in local.nodes : key => var.reservation_id if var.reservation_id != "" },
    { for key, lease in data.external.lease : key => lease.result.flavor_id },
  )
}

resource "terraform_data" "lease" {
  for_each = local.leases_to_create

  # A different flavor or owner needs a new lease (and a new instance).
  triggers_replace = local.reservation_source[each.key]

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
      AMOUNT         = 1
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

# The source of every node's reserved flavor, as a resource that instances.tf
# can name in replace_triggered_by: when a node's lease is replaced (Blazar
# deletes the VM with the old lease) or its reservation id changes, the node is
# replaced. It does not hold the flavor id: that is unknown whenever any lease
# changes (the lease data is then read during apply), and would replace every
# node when one is added.
resource "terraform_data" "reservation" {
  for_each = local.nodes

  input = local.reservation_source[each.key]
}
