"""alectio model plugin ``digits_cnn``: a small CNN on scikit-learn's 8x8 digits.

The hooks live in :mod:`alectio_digits_cnn.hooks`, the module the
``alectio.models`` entry point names.
"""

__version__ = "0.1.0"
