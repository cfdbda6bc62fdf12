"""alectio model plugin ``shapes_detector``: a CenterNet-style detector of shapes.

The hooks live in :mod:`alectio_shapes_detector.hooks`, the module the
``alectio.models`` entry point names.
"""

__version__ = "0.1.0"
