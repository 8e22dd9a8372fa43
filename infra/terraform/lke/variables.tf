# No secret has a default, and none belongs in a file: the token comes from the environment.

variable "linode_token" {
  description = "Linode API token. Leave unset and export LINODE_TOKEN (or TF_VAR_linode_token) instead."
  type        = string
  sensitive   = true
  default     = null # null: the provider reads LINODE_TOKEN from the environment
}

variable "region" {
  description = "Linode region with RTX 4000 Ada plans (`linode-cli regions list`, `linode-cli linodes types`)."
  type        = string
  default     = "us-sea"
}

variable "cluster_label" {
  description = "Name of the LKE cluster; unique in your account."
  type        = string
  default     = "vllm-serving-labs"
}

variable "k8s_version" {
  description = "LKE Kubernetes version; the manifests are validated against 1.35 (`linode-cli lke versions-list`)."
  type        = string
  default     = "1.35"
}

variable "cpu_node_type" {
  description = "Plan of the CPU pool: system pods, monitoring, the gateway."
  type        = string
  default     = "g6-standard-4"
}

variable "cpu_node_count" {
  description = "Nodes in the CPU pool."
  type        = number
  default     = 2
}

variable "gpu_node_type" {
  description = "Plan of the GPU pool: one NVIDIA RTX 4000 Ada (20 GB), 8 vCPU, 32 GB, as in the article."
  type        = string
  default     = "g2-gpu-rtx4000a1-m"
}

variable "gpu_autoscaler_min" {
  description = "GPU nodes the pool keeps at least (one engine each); KEDA's minReplicaCount is the same."
  type        = number
  default     = 1

  validation {
    condition     = var.gpu_autoscaler_min >= 1
    error_message = "Keep at least one GPU node: every profile runs an engine."
  }
}

variable "gpu_autoscaler_max" {
  description = "GPU nodes the autoscaler may add up to (one engine each, each billed by the hour); KEDA's maxReplicaCount is the same."
  type        = number
  default     = 3

  validation {
    condition     = var.gpu_autoscaler_max >= 1
    error_message = "The pool needs at least one GPU node."
  }
}

variable "allowed_cidrs" {
  description = "IPv4 CIDRs that may reach the API (the NodeBalancer, TCP 80), e.g. [\"203.0.113.10/32\"]; no default, so the cluster is never open by accident. [\"0.0.0.0/0\"] opens it to everyone."
  type        = list(string)

  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrnetmask(c))])
    error_message = "Give at least one IPv4 CIDR, like 203.0.113.10/32."
  }
}
