output "kubeconfig" {
  description = "kubeconfig of the cluster: terraform output -raw kubeconfig > kubeconfig"
  value       = base64decode(linode_lke_cluster.course.kubeconfig)
  sensitive   = true
}

output "cluster_id" {
  description = "LKE cluster id (for linode-cli lke ...)."
  value       = linode_lke_cluster.course.id
}

output "api_endpoints" {
  description = "Kubernetes API endpoints of the cluster."
  value       = linode_lke_cluster.course.api_endpoints
}

output "nodebalancer_firewall_id" {
  description = "Cloud Firewall for the NodeBalancer: its id goes into the llm-api Service's annotation (infra/k8s/base/services.yaml)."
  value       = linode_firewall.nodebalancer.id
}
