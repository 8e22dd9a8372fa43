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

variable "gpu_node_count" {
  description = "GPU nodes: 1 for the single-server profiles; up to the HPA's maxReplicas for data-parallel."
  type        = number
  default     = 1
}
