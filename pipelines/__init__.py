"""Kubeflow Pipelines definitions of the training pipeline (see README: status)."""
