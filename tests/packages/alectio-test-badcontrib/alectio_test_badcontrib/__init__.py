"""Plugins whose ``register_*`` hooks, strategies and metrics fail."""
