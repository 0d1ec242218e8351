# Everything a course user sets lives in terraform.tfvars (see
# terraform.tfvars.example). Platform facts (ports, image, k3s version,
# namespace) are not variables: they come from components/platform.yaml.

variable "user" {
  description = "Your Chameleon user name (or net ID); it makes every resource name unique in the shared project."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.user))
    error_message = "user must be 3-24 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "key_pair" {
  description = "Name of an SSH key pair that already exists in KVM@TACC (Horizon > Compute > Key Pairs)."
  type        = string

  validation {
    condition     = length(trimspace(var.key_pair)) > 0
    error_message = "key_pair must name an existing key pair."
  }
}

variable "ssh_private_key" {
  description = "Path of the private key matching key_pair; used only in the printed ssh and tunnel commands."
  type        = string
  default     = "~/.ssh/id_rsa_chameleon"
}

variable "os_cloud" {
  description = "Cloud entry in clouds.yaml (the application-credential download names it 'openstack')."
  type        = string
  default     = "openstack"

  validation {
    condition     = length(trimspace(var.os_cloud)) > 0
    error_message = "os_cloud must name an entry in clouds.yaml."
  }
}

variable "region" {
  description = "OpenStack region; flavor reservations for VMs exist on KVM@TACC."
  type        = string
  default     = "KVM@TACC"

  validation {
    condition     = length(trimspace(var.region)) > 0
    error_message = "region must not be empty."
  }
}

variable "node_count" {
  description = "Number of CPU nodes: the first is the k3s control plane (it runs the platform), the rest join as agents and run the training. Adding one later touches no other node."
  type        = number
  default     = 3

  validation {
    condition     = var.node_count >= 2 && var.node_count <= 20 && floor(var.node_count) == var.node_count
    error_message = "node_count must be a whole number from 2 to 20: the control plane is full with the platform, so a RayJob needs at least one agent for its CPUs."
  }
}

variable "flavor" {
  description = "Flavor to reserve for each CPU node (each node's lease turns it into a reserved flavor)."
  type        = string
  default     = "m1.large"

  validation {
    condition     = length(trimspace(var.flavor)) > 0
    error_message = "flavor must not be empty."
  }
}

variable "server_flavor" {
  description = "Flavor of the control plane if it should differ from flavor (it holds the registry, the image builds and all platform data); empty means flavor. Ignored when reservation_id is set."
  type        = string
  default     = ""

  validation {
    condition     = var.server_flavor == trimspace(var.server_flavor)
    error_message = "server_flavor must be empty or a flavor name without surrounding spaces."
  }
}

variable "reservation_id" {
  description = "Existing flavor reservation id (amount >= node_count) for all CPU nodes; leave empty to let Terraform create (and later delete) one lease per node."
  type        = string
  default     = ""

  validation {
    condition     = var.reservation_id == "" || can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.reservation_id))
    error_message = "reservation_id must be empty or a reservation UUID."
  }
}

variable "lease_hours" {
  description = "Length of a lease that Terraform creates, in hours (instances are deleted when it ends)."
  type        = number
  default     = 24

  validation {
    condition     = var.lease_hours >= 1 && var.lease_hours <= 168 && floor(var.lease_hours) == var.lease_hours
    error_message = "lease_hours must be a whole number from 1 to 168."
  }
}

variable "image" {
  description = "Image of the CPU nodes."
  type        = string
  default     = "CC-Ubuntu24.04"

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must not be empty."
  }
}

variable "gpu_count" {
  description = "Optional GPU agent: 0 (none) or 1."
  type        = number
  default     = 0

  validation {
    condition     = contains([0, 1], var.gpu_count)
    error_message = "gpu_count must be 0 or 1."
  }
}

variable "gpu_flavor" {
  description = "Flavor to reserve for the GPU node."
  type        = string
  default     = "g1.h100.pci.1"

  validation {
    condition     = length(trimspace(var.gpu_flavor)) > 0
    error_message = "gpu_flavor must not be empty."
  }
}

variable "gpu_reservation_id" {
  description = "Existing flavor reservation id for the GPU node; leave empty to let Terraform create the lease."
  type        = string
  default     = ""

  validation {
    condition     = var.gpu_reservation_id == "" || can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.gpu_reservation_id))
    error_message = "gpu_reservation_id must be empty or a reservation UUID."
  }
}

variable "gpu_image" {
  description = "Image of the GPU node (the CUDA variant ships the NVIDIA driver)."
  type        = string
  default     = "CC-Ubuntu24.04-CUDA"

  validation {
    condition     = length(trimspace(var.gpu_image)) > 0
    error_message = "gpu_image must not be empty."
  }
}

variable "private_cidr" {
  description = "CIDR of the private cluster network; must not overlap k3s pods (10.42.0.0/16) or services (10.43.0.0/16)."
  type        = string
  default     = "192.168.50.0/24"

  validation {
    condition = try(
      cidrhost(var.private_cidr, 0) != "" &&
      tonumber(split("/", var.private_cidr)[1]) >= 16 &&
      tonumber(split("/", var.private_cidr)[1]) <= 24 &&
      !startswith(var.private_cidr, "10.42.") &&
      !startswith(var.private_cidr, "10.43."),
      false
    )
    error_message = "private_cidr must be an IPv4 CIDR with a prefix from /16 to /24, outside 10.42.0.0/16 and 10.43.0.0/16."
  }
}

variable "private_mtu" {
  description = "MTU for the private NIC when a node has to configure it itself; used only if Neutron reports no MTU for the network (VXLAN tenant networks are 1450)."
  type        = number
  default     = 1450

  validation {
    condition     = var.private_mtu >= 1280 && var.private_mtu <= 9216 && floor(var.private_mtu) == var.private_mtu
    error_message = "private_mtu must be a whole number from 1280 to 9216."
  }
}

variable "repo_url" {
  description = "Git URL of the servicetime repository (your fork) that the control plane clones to run infra/bootstrap.sh."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9._@:/~+-]+$", var.repo_url))
    error_message = "repo_url must be an https:// URL (the node has no git credentials) without spaces or quotes."
  }
}

variable "repo_ref" {
  description = "Branch or tag of repo_url to check out on the control plane."
  type        = string
  default     = "main"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.repo_ref))
    error_message = "repo_ref must be a branch or tag name."
  }
}
