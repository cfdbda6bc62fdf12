"""alectio model plugin ``newsgroups_text``: topic classification of 20 Newsgroups.

The hooks live in :mod:`alectio_newsgroups_text.hooks`, the module the
``alectio.models`` entry point names.
"""

__version__ = "0.1.0"
