"""The training pipeline's steps as plain functions over files, one module per step.

Each function reads its inputs from paths, writes its outputs to paths, and returns a small
summary. The Kubeflow components (:mod:`components.kfp_components`) are thin wrappers around
them, so the same code runs under ``kfp.local``, on a KFP cluster, and in unit tests. Nothing
is re-exported here: each pipeline step imports only its own module, to start fast.
"""
