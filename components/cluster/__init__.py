"""Cluster side of servicetime: Kubernetes objects built from the platform facts.

``render`` turns ``components/core/platform.yaml`` into kustomize inputs and renders the
overlays; ``rayjob`` builds and runs KubeRay jobs; ``deploy`` builds the model
server and rolls a new model out as a canary. Nothing here talks to a cluster at
import time; the Kubernetes API objects are passed in (or created on first use).
"""
