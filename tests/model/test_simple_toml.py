"""The configuration's small TOML reader (icc.fastconfig.simple_toml, used by the idle tick and by the full
loader before tomllib) gives what tomllib gives, or nothing: property tests over TOML-like text."""

from __future__ import annotations

import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st
from icc.fastconfig import simple_toml

# fmt: off
TOKENS = [
    "a", "b", "state_dir", "[icc]", "[icc.store]", "[ a ]", "[a.b]", "[[a]]", " = ", "=", '"x"', '"é"',
    '"a\\"b"', "'x'", "1", "-0", "01", "+1", "1.5", "true", "false", "[]", '["x", "y"]', '["x",]', "[,]",
    "{b = 1}", " ", "\t", "#", " # c", "\n", "\r\n", "\r", "\x01", "\x7f", ".", ",",
]
# fmt: on
PIECES = st.sampled_from(TOKENS)


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=24).map("".join))
def test_simple_toml_gives_what_tomllib_gives_or_nothing(text: str) -> None:
    ours = simple_toml(text)
    try:
        theirs = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assert ours is None, text
        return
    assert ours is None or ours == theirs, text
