"""Notifications: heartbeat pings (``icc.notify.pings``), alert mail and notification URLs."""
