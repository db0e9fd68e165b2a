"""Supervising one run: the process that runs a task under its limits, captures its output and records it.

Submodules are imported by name (``icc.supervise.supervisor``, ``icc.supervise.leases``); nothing is re-exported.
"""
