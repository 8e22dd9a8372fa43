"""Compose and Kubernetes manifests, clusters, requirements, Grafana dashboards.
"""
