variable "user" {
  description = "Your Chameleon user name, the same as `user` in ../terraform.tfvars; it names the volume."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.user))
    error_message = "user must be 3-24 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "size_gb" {
  description = "Size of the state volume in GB. It counts against the project's volume storage quota for as long as it exists, attached or not. It can grow later (then resize2fs on the node), never shrink."
  type        = number
  default     = 50

  validation {
    condition     = var.size_gb >= 10 && var.size_gb <= 1000 && floor(var.size_gb) == var.size_gb
    error_message = "size_gb must be a whole number from 10 to 1000."
  }
}

variable "os_cloud" {
  description = "Cloud entry in clouds.yaml, as in the main module."
  type        = string
  default     = "openstack"

  validation {
    condition     = length(trimspace(var.os_cloud)) > 0
    error_message = "os_cloud must name an entry in clouds.yaml."
  }
}

variable "region" {
  description = "OpenStack region of the cluster (the volume must be where the control plane runs)."
  type        = string
  default     = "KVM@TACC"

  validation {
    condition     = length(trimspace(var.region)) > 0
    error_message = "region must not be empty."
  }
}
