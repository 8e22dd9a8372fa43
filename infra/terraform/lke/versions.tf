terraform {
  required_version = ">= 1.5"
  required_providers {
    linode = {
      source  = "linode/linode"
      version = "3.2.0" # exact: `terraform init` records its checksums in .terraform.lock.hcl
    }
    helm = {
      source  = "hashicorp/helm"
      version = "3.1.2" # exact; 3.x takes `kubernetes = { ... }` as an attribute
    }
  }
}
