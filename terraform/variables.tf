# Everything a course user sets lives in terraform.tfvars (see
# terraform.tfvars.example). Platform facts (ports, image, k3s version,
# namespace) are not variables: they come from components/core/platform.yaml.

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
  description = "Length of each lease that Terraform creates, in hours; Blazar deletes the node when its lease ends, and these leases cannot be extended. 6 covers one lab session: about 30-40 minutes of boot and bootstrap, a 3-4 hour lab, and an hour of slack. A lease uses the allocation while it runs, busy or idle, so set more only for a longer run (keep state on a state volume to come back another day)."
  type        = number
  default     = 6

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

variable "state_volume_id" {
  description = "Id of a kept Cinder volume for the platform's state (created once with the module in state/; see README.md). Attached to the control plane and mounted before k3s starts; terraform destroy detaches it and never deletes it. Empty: the state lives on the control plane's root disk and goes with the node."
  type        = string
  default     = ""

  validation {
    condition     = var.state_volume_id == "" || can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.state_volume_id))
    error_message = "state_volume_id must be empty or a volume UUID (terraform -chdir=state output -raw volume_id)."
  }
}

variable "registry_mirror" {
  description = "Pull-through cache for Docker Hub images, e.g. a course's registry mirror (https://host:port): every node's containerd pulls docker.io images through it, falling back to Docker Hub. A class behind one NAT address otherwise shares Docker Hub's anonymous pull limit. Empty: pull from Docker Hub."
  type        = string
  default     = ""

  validation {
    condition     = var.registry_mirror == "" || can(regex("^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$", var.registry_mirror))
    error_message = "registry_mirror must be empty or an http(s):// URL without spaces or quotes."
  }
}

variable "shared_security_groups" {
  description = "Names of existing security groups to use instead of creating two per user: {ssh = \"...\", cluster = \"...\"}. ssh must allow TCP 22 from anywhere, cluster all traffic from private_cidr (README.md, A class in one project). Neutron allows 10 security groups per project by default; a class shares one set. Empty: create this user's own two."
  type        = map(string)
  default     = {}

  validation {
    condition = length(var.shared_security_groups) == 0 || (
      toset(keys(var.shared_security_groups)) == toset(["ssh", "cluster"]) &&
      alltrue([for name in values(var.shared_security_groups) : trimspace(name) != ""])
    )
    error_message = "shared_security_groups must be empty or name exactly two groups: {ssh = \"...\", cluster = \"...\"}."
  }
}

variable "prebuilt_image" {
  description = "Component image to copy into the in-cluster registry instead of building it on the control plane (e.g. one a course published for this repository's version), a registry reference such as ghcr.io/org/servicetime:0.1.0. Saves the image build on every new cluster. Empty: build it from the checkout."
  type        = string
  default     = ""

  validation {
    condition     = var.prebuilt_image == "" || can(regex("^[A-Za-z0-9][A-Za-z0-9._/:@-]*$", var.prebuilt_image))
    error_message = "prebuilt_image must be empty or an image reference (registry/name:tag or name@sha256:...), without spaces or quotes."
  }
}
