"""Build-time renderers: the cluster install, its manifests, monitoring rules and dashboards."""
