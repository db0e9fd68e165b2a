"""The embedded SQLite backend: the state store (``state``), the queue transport (``queues``) and the
diagnosis of SQLite and file errors (``diagnosis``). Only ``icc.store`` imports it by name."""
