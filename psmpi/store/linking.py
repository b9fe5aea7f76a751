"""Adding objects to a results file: each is whole on disk before a link reaches it.

A kill inside HDF5's flush can leave what that flush wrote torn. An object whose header is
torn cannot be opened, moved or deleted, and a link to one makes the whole file unreadable:
the walk over the file's links that every open makes (:func:`.file.open_h5`) fails. So every
group and dataset psmpi adds to a file is made anonymous (linked nowhere), flushed, then
linked and flushed again (:func:`link`): killed inside the first flush, the new object is
bytes that nothing reaches; inside the second, a link reaches a whole object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import h5py

    Made = list[tuple["h5py.Group", str, "h5py.Group" | "h5py.Dataset"]]


def new_group(f: h5py.Group, track_order: bool = False) -> h5py.Group:
    """An anonymous group in ``f``'s file (link it with :func:`link`)."""
    import h5py
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    if track_order:
        flags = h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED
        gcpl.set_link_creation_order(flags)
        gcpl.set_attr_creation_order(flags)
    return h5py.Group(h5py.h5g.create(f.id, None, gcpl=gcpl))


def link(made: Made) -> None:
    """Flush, link each new object of ``made`` as ``parent[name]``, flush again."""
    if not made:
        return
    f = made[0][0].file
    f.flush()
    for parent, name, obj in made:
        if name in parent:
            del parent[name]  # left by a widening undone in this process: whole, deletable
        parent[name] = obj
    f.flush()


def require_group(parent: h5py.Group, name: str, track_order: bool = False) -> h5py.Group:
    """``parent[name]``; made anonymous and linked whole if missing."""
    if name not in parent:
        link([(parent, name, new_group(parent, track_order))])
    return parent[name]
