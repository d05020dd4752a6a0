"""`make bench`: every benchmark, each printing its table."""

from __future__ import annotations

import sys

from bench import claims, declare, load, timers


def main() -> None:
    sys.argv = [sys.argv[0]]
    declare.main()
    claims.main()
    load.main()
    timers.main()


if __name__ == "__main__":
    main()
