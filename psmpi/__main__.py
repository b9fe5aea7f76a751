"""``python -m psmpi``: the same as the ``psmpi`` command."""

from .cli import main

if __name__ == "__main__":  # pytest's doctest collection imports this module too
    raise SystemExit(main())
