"""Console entry point.

``icc run`` with nothing due must cost little more than starting Python with filelock and sqlite3, so
the tick's idle path is tried before click, rich and the plugins are imported.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if "run" in args[:3]:
        from icc.tick.idle import try_idle_tick

        code = try_idle_tick(args)
        if code is not None:
            raise SystemExit(code)
    from icc.cli import cli

    cli.main(args=args, prog_name="icc")


if __name__ == "__main__":
    main()
