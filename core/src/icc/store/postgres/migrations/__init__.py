"""Numbered SQL migrations of the PostgreSQL store (``NNNN_name.sql``), applied by ``icc db migrate``.

``{schema}`` in a file is replaced by the quoted ``[icc.store] schema``. A shipped migration is never edited:
a change is a new file with the next number.
"""
