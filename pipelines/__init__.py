"""Kubeflow Pipelines: thin component wrappers, the DAG, and how to run it locally or on a cluster."""
