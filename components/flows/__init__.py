"""Flows that chain steps outside a pipeline: the continual loop."""
