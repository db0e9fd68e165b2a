"""A plugin that cannot be imported: its dependency is missing."""

import icc_dependency_that_is_not_installed  # noqa: F401
