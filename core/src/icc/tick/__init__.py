"""The tick: plan the minute from the store, claim the due runs, hand each to a supervisor, record.

Submodules are imported by name (``icc.tick.idle``, ``icc.tick.coordinator``, ...): this package re-exports
nothing, so importing one of them costs only that module.
"""
