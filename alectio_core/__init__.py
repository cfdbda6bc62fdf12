"""alectio: a self-hosted active-learning loop server.

Plugin authors need only ``hookimpl``. Python users drive loops with
``Engine`` over a storage from ``open_storage``; ``select`` and
``compute_metrics`` are the strategy and metrics entry points. Importing
this package loads no plugin.
"""

from .hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec", "Engine", "open_storage", "load_config", "select", "compute_metrics"]
__version__ = "0.1.0"

_LAZY = {
    "Engine": ("engine", "Engine"),
    "open_storage": ("storage", "open_storage"),
    "load_config": ("config", "load_config"),
    "select": ("strategies", "select"),
    "compute_metrics": ("metrics", "compute_metrics"),
}


def __getattr__(name: str):
    # Keeps ``import alectio_core`` cheap: numpy, Flask and friends load on use.
    if name in _LAZY:
        from importlib import import_module

        module, attr = _LAZY[name]
        return getattr(import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'alectio_core' has no attribute {name!r}")
