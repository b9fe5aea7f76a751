"""Names of a package imported on first use (PEP 562), for the packages every rank imports.

On thousands of MPI ranks each module imported at start-up is a storm of file-system lookups
(and, without .pyc files, a compile on every rank), so ``psmpi`` and ``psmpi.store`` import
most of their names only when a name is first used. A package hands its table of names to
:func:`lazy_names` and takes the module ``__getattr__`` and ``__dir__`` it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_names(package: str, table: dict[str, str], namespace: dict
               ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose names ``table`` maps to the relative
    module that defines each (a name equal to its module's last part is the module itself).

    The first use of a name imports its module and stores the value in ``namespace`` (the
    package's globals), so later lookups are plain attribute lookups.
    """
    def __getattr__(name: str) -> object:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = import_module(table[name], package)
        value = module if name == module.__name__.rpartition(".")[2] else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *table})  # tab completion offers the lazy names too

    return __getattr__, __dir__
