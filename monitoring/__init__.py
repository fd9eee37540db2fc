"""Drift monitoring, label feedback and alerts (see README: status)."""
