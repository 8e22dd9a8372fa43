# An LKE cluster for the course: a CPU pool for everything but vLLM, and an autoscaled GPU pool
# that only vLLM may use (taint nvidia.com/gpu for everyone else; the vLLM pods select its plan,
# node.kubernetes.io/instance-type, which the Linode cloud controller manager sets on every
# node). Closed to the internet but for the API: a Cloud Firewall on the NodeBalancer (TCP 80
# from var.allowed_cidrs), and the cloud-firewall-controller's firewall on every node (the
# NodePort range and everything else public is dropped), as the article's repo does.
# The workload itself is applied with kubectl (python -m labs cluster PROFILE), not here.

provider "linode" {
  token = var.linode_token
}

resource "linode_lke_cluster" "course" {
  label       = var.cluster_label
  region      = var.region
  k8s_version = var.k8s_version
  tags        = ["vllm-serving-labs"]

  # The CPU pool: LKE insists on one in the cluster resource. Its plan and count are settings
  # (terraform/lke/README.md): a change to either is planned and applied like any other.
  pool {
    type  = var.cpu_node_type
    count = var.cpu_node_count
  }

  # The GPU pool is a resource of its own (below) so that it can be resized, or removed to stop
  # its bill, without touching the cluster. Pools carrying one of these tags are managed
  # elsewhere: the cluster neither deletes nor updates them on apply (terraform-provider-linode
  # documents external_pool_tags for exactly this). Not `lifecycle { ignore_changes = [pool] }`,
  # which would also silently ignore every change to the CPU pool above.
  external_pool_tags = ["gpu"]
}

# One GPU per node and one engine per GPU: the cluster autoscaler adds a node when an engine
# replica is Pending for want of a GPU, and removes an idle one. KEDA's minReplicaCount and
# maxReplicaCount (infra/k8s/components/router/scaledobject.yaml) are these two numbers, so it
# never asks for a replica this pool cannot hold (tests/test_router.py checks they agree).
resource "linode_lke_node_pool" "gpu" {
  cluster_id = linode_lke_cluster.course.id
  type       = var.gpu_node_type
  tags       = ["vllm-serving-labs", "gpu"] # "gpu": external_pool_tags, so the cluster leaves it be

  autoscaler {
    min = var.gpu_autoscaler_min
    max = var.gpu_autoscaler_max
  }

  # Kept for `kubectl get nodes -L pool`; the pods do not depend on it (LKE does not always
  # copy pool labels onto the nodes).
  labels = {
    pool = "gpu"
  }

  taint {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NoSchedule"
  }
}

# The NodeBalancer's firewall. The NodeBalancer itself belongs to Kubernetes (the Service
# llm-api); the Linode cloud controller manager attaches this firewall when it creates it, from
# the Service's annotation service.beta.kubernetes.io/linode-loadbalancer-firewall-id
# (infra/k8s/base/services.yaml: put `terraform output -raw nodebalancer_firewall_id` there).
# Only the API port, only from the CIDRs you name; IPv6 and everything else are dropped.
resource "linode_firewall" "nodebalancer" {
  label           = "${var.cluster_label}-api"
  tags            = ["vllm-serving-labs"]
  inbound_policy  = "DROP"
  outbound_policy = "ACCEPT"

  inbound {
    label    = "allow-api-http"
    action   = "ACCEPT"
    protocol = "TCP"
    ports    = "80"
    ipv4     = var.allowed_cidrs
  }
}

# The nodes' firewall: without it every node's public IP answers on the NodePort range
# (30000-32767), around the NodeBalancer and its firewall. The controller creates one Cloud
# Firewall with LKE's recommended rules (control plane, NodeBalancer backends, cluster traffic)
# and keeps every node in it, including the GPU nodes the autoscaler adds. CRDs first.
locals {
  kubeconfig = yamldecode(base64decode(linode_lke_cluster.course.kubeconfig))
}

provider "helm" {
  kubernetes = {
    host                   = local.kubeconfig.clusters[0].cluster.server
    cluster_ca_certificate = base64decode(local.kubeconfig.clusters[0].cluster["certificate-authority-data"])
    token                  = local.kubeconfig.users[0].user.token
  }
}

resource "helm_release" "cloud_firewall_crd" {
  name       = "cloud-firewall-crd"
  repository = "https://linode.github.io/cloud-firewall-controller"
  chart      = "cloud-firewall-crd"
  version    = "0.2.0"
  namespace  = "kube-system"
  wait       = true
  timeout    = 300

  depends_on = [linode_lke_node_pool.gpu]
}

resource "helm_release" "cloud_firewall_controller" {
  name       = "cloud-firewall"
  repository = "https://linode.github.io/cloud-firewall-controller"
  chart      = "cloud-firewall-controller"
  version    = "0.2.1"
  namespace  = "kube-system"
  wait       = true
  timeout    = 300

  depends_on = [helm_release.cloud_firewall_crd]
}
