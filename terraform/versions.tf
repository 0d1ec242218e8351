terraform {
  # terraform_data (1.4+) and deferred data sources behave as relied on here.
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    openstack = {
      source  = "terraform-provider-openstack/openstack"
      version = "~> 3.3"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    # Reads back the lease that scripts/lease.sh created (Blazar has no provider).
    external = {
      source  = "hashicorp/external"
      version = "~> 2.3"
    }
  }
}

# Credentials come from clouds.yaml (an application credential); nothing secret
# lives in .tf or .tfvars files.
provider "openstack" {
  cloud  = var.os_cloud
  region = var.region
}
