# An LKE cluster for the course: a CPU pool for everything but vLLM, and a GPU pool that only
# vLLM may use (label pool=gpu for its nodeSelector, taint nvidia.com/gpu for everyone else).
# The workload itself is applied with kubectl (python -m labs cluster PROFILE), not here.

provider "linode" {
  token = var.linode_token
}

resource "linode_lke_cluster" "course" {
  label       = var.cluster_label
  region      = var.region
  k8s_version = var.k8s_version
  tags        = ["vllm-serving-labs"]

  pool {
    type  = var.cpu_node_type
    count = var.cpu_node_count
  }

  # LKE insists on a pool in the cluster resource; the GPU pool is a resource of its own so
  # that it can be resized (or removed to stop its bill) without touching the cluster.
  lifecycle {
    ignore_changes = [pool]
  }
}

resource "linode_lke_node_pool" "gpu" {
  cluster_id = linode_lke_cluster.course.id
  type       = var.gpu_node_type
  node_count = var.gpu_node_count
  tags       = ["vllm-serving-labs", "gpu"]

  labels = {
    pool = "gpu"
  }

  taint {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NoSchedule"
  }
}
