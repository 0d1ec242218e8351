# A root module of its own, with its own state file: the main module's
# `terraform destroy` cannot reach what is created here.
terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    openstack = {
      source  = "terraform-provider-openstack/openstack"
      version = "~> 3.3"
    }
  }
}

# The same clouds.yaml as the main module (see ../README.md, "State that
# outlives the lease", for where it is found).
provider "openstack" {
  cloud  = var.os_cloud
  region = var.region
}
