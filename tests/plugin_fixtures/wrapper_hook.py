"""A plugin with a hook wrapper, which icc cannot honour (each plugin's hooks are called on their own)."""

from collections.abc import Iterator
from typing import Any

import icc


@icc.hookimpl(wrapper=True)
def schedule(scheduler: Any) -> Iterator[None]:
    yield
