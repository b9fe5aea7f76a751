"""The crash-safe HDF5 results store, and what lives beside a results file.

The table machinery is ``schema``, ``commit``, ``rows``, ``table``, ``file``, ``readers``,
``checking`` and ``damage``; beside it, ``lock`` (one writer per file), ``attempts`` (the
durable log of poison psets) and ``bookkeeping`` (run and pset ids and their column
names). This folder may import only the foundations (the top-level modules ``errors``,
``layout``, ``values``, ``params``, ``lazy``); everything else of psmpi builds on it.

Layout of a results file (readable with plain h5py; only values with no other encoding
are pickled, inside JSON, and never unpickled unless asked)::

    study.h5                   attrs: psmpi_format=1
      <map name>/              one group per map() name; attrs: created (ISO UTC), psmpi_version
        results/               a table of the rows that finished
          n_committed          int64 scalar; only rows [0, n_committed) are valid. Compact
                               layout: the value lives in the (checksummed) object header
          columns/<key>        one chunked (~8 KiB; ~64 KiB if made by a commit of at least
                               schema.BIG_COMMIT_ROWS rows), resizable dataset per column, in creation
                               order: shape (N,) for scalars, (N, *shape) for arrays; attr
                               ``kind`` in {"bool", "int", "float", "str", "array", "ragged",
                               "general"}; a general column holds (offset, length) int64 pairs
                               (a compound dtype) into its heap, length 0 for a null; a ragged
                               one (offset, nbytes) pairs and attr ``dtype`` (numpy's dtype.str)
          heaps/<key>          uint8 bytes of a general column's values, one JSON document
                               per row (psmpi.values), or of a ragged column's, the raw C-order
                               bytes of each array; chunked (8 KiB; ragged: 64 KiB), appended
                               in order
          shapes/<key>         int64 (N, ndim): the shape of each value of a ragged column
          nulls/<key>          optional bool mask, True where the row has no value; a mask
                               shorter than n_committed means False for the missing tail
          staging/<key>        transient: a column being widened to a wider dtype, to ragged or
                               to general
          staging_heaps/<key>  transient: the new heap of a column being widened so
          retired/<hex>        what a killed commit created, unlinked by the next writer
        failures/              a table of the same kind for the psets that failed

Integrity. Every chunked dataset has HDF5's Fletcher-32 filter, which HDF5 verifies on each
read; the file is created with a version-2 superblock and its objects are written in the
HDF5 1.10 formats (object headers v2, extensible-array chunk indexes), whose metadata HDF5
checksums. So a flipped byte anywhere psmpi reads is an error, never a wrong value; the
readers turn h5py's errors into a :class:`DamageError` (a StoreError) naming the file, table,
column and rows, and :func:`check` surveys a whole file. A chunk torn by a writer killed
while rewriting it is told from damage by its checksum (:func:`.damage._torn_chunk`): readers take
its committed rows and the next writer rewrites it. Files of psmpi before checksums
(no filters, a contiguous n_committed, version-0 superblock) read and resume as before; the
datasets a writer adds to them are checksummed. Nothing outside the file is touched:
:func:`open_h5` refuses a file with any link that is not a hard link (an external link, or a
soft link that may lead to one), and :class:`Table` refuses a dataset with external storage or
a virtual layout before reading it. psmpi writes none of these.

Values of a row (a dict ``{str: value}``) and the column kinds they make: bool and
numpy.bool_ -> "bool"; int and numpy integers within int64 -> "int" (int64); float and
numpy floating -> "float" (float64, NaN is a value); str -> "str" (UTF-8 in fixed-width bytes,
``S<n>``, n a power of two, widened when a longer string comes; variable-length strings
would live in HDF5's global heap, which a killed writer can leave unwritable); numpy arrays
of bool/int/uint/float dtype and ndim >= 1 -> "array" (one fixed shape and dtype per
column; 0-d arrays count as their scalar); numpy arrays of bool/int/uint/float/complex
dtype of one ndim whose shapes differ from row to row (or that are empty, or complex) ->
"ragged" (one dtype per column); None or an absent key -> null. Everything else
-> "general": containers, complex, bytes, datetimes, other numpy scalars, ints beyond int64,
str longer than values.STR_MAX_BYTES (4 KiB: a fixed-width column of 64 KiB strings cannot
be created, its fill value lives in the object header), arrays of other dtypes, and any
value of a key whose rows disagree in kind or array ndim, or whose array dtypes no dtype
holds exactly (int64 and float64). Each general value is one JSON
document with typed extensions (:mod:`psmpi.values`), UTF-8 bytes appended to
``heaps/<key>``; values with no encoding are pickled there (one warning per key) and read
back as bytes unless ``unpickle=True``; only a value that cannot be pickled is refused by
:meth:`Table.admit`. Widening never loses a committed value: "int" receiving a float
becomes "float" if every stored and incoming int is exact in float64 (|v| <= 2**53, checked
when appending, :func:`.commit._settle`), else "general"; an array or ragged column widens
to ``np.result_type`` where that is exact (:func:`.schema._exact_wide`), an array column
given another shape of its ndim becomes ragged; other mismatches make the column general.
A widening writes the new column aside in staging/ and its new heap in staging_heaps/ (the
shapes of a column becoming ragged straight into shapes/), flushes, then swaps them in
(:func:`.commit._swap_in`: the old column is deleted first, so a column in staging/ with
none in columns/ is a swap to finish); the next writer finishes or undoes an interrupted
one (:func:`.commit._repair`) and drops a heap whose column is neither general nor ragged,
and shapes whose column is not ragged.

Reading a column by hand::

    with h5py.File("study.h5", "r", locking=False) as f:
        t = f["my_map/results"]
        n = int(t[N_COMMITTED][()])
        y = t["columns/y"][:n]
        # a general column: one JSON document per row, length 0 for a null
        heap = t["heaps/g"]
        g = [json.loads(heap[o:o + k].tobytes()) if k else None
             for o, k in t["columns/g"][:n].tolist()]
        # a ragged column: each row's bytes as the column's dtype, in its shape
        dtype, shapes = np.dtype(t["columns/r"].attrs["dtype"]), t["shapes/r"][:n]
        r = [np.frombuffer(t["heaps/r"][o:o + k].tobytes(), dtype).reshape(shape)
             for (o, k), shape in zip(t["columns/r"][:n].tolist(), shapes)]

Every append is a two-phase commit: schema changes (new datasets, widening) are made
and flushed first, then every heap and column is resized and written, the file is flushed,
``n_committed`` is written and the file is flushed again. A writer killed at any instant
leaves a readable file whose committed prefix is exact; the next writer truncates the
uncommitted tail. Creating an object is where a kill inside a flush can tear metadata, and
HDF5 can neither read nor delete a torn object. So every group and dataset psmpi adds is made
anonymous, flushed, and only then linked (:mod:`.linking`): no link ever reaches a torn object
header, which would make the whole file unreadable. A new column's chunk index is made by
its first commit, and every column and null mask carries ``first_row``, n_committed at its
creation: one not below n_committed holds no committed value, readers skip it unread, and
the next writer moves it and its heap and shapes to retired/ (a second hard link: unlinking
then reads nothing torn).
psmpi's own lock file ``<file>.lock`` (JSON: host, pid, Slurm job) keeps a second writer
away; HDF5's flock is not used (Lustre and NFS may lack it).

The package, by responsibility (names of groups, datasets and attributes are
:mod:`psmpi.layout`'s; which value makes which kind is :mod:`psmpi.values`'):

- :mod:`.schema`: columns, their HDF5 dtypes, chunks and fill values; admission of rows;
- :mod:`.commit`: gathering values, the two-phase commit, widening, repair;
- :mod:`.linking`: adding groups and datasets, each whole on disk before a link reaches it;
- :mod:`.rows`: reading committed rows (slices, nulls, decoding, frames);
- :mod:`.table`: :class:`Table`, the façade over one table;
- :mod:`.file`: creating, opening and checking files, free space, :class:`Store`;
- :mod:`.readers`: :func:`read`, :func:`map_names`, :func:`reading`;
- :mod:`.checking`: :func:`check` and its report;
- :mod:`.damage`: h5py's errors on damage, how it is reported, torn chunks.
"""

from typing import TYPE_CHECKING

from ..errors import DamageError, StoreError
from ..layout import FORMAT, TABLE_KINDS
from ..lazy import lazy_names

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ below
    from .checking import CheckReport, Damage, TableCheck, check
    from .file import MIN_FREE_BYTES, Store, maps_in, open_h5
    from .readers import map_names, read, reading
    from .table import Table

# The names of the submodules, imported on first use (PEP 562): a worker hashes its psets
# with ``store.bookkeeping`` and needs none of the table machinery, so importing a submodule
# must not import the others (each is compiled, or at least looked up, on every rank).
_LAZY = {
    "CheckReport": ".checking", "Damage": ".checking", "TableCheck": ".checking",
    "check": ".checking",
    "MIN_FREE_BYTES": ".file", "Store": ".file", "maps_in": ".file", "open_h5": ".file",
    "map_names": ".readers", "read": ".readers", "reading": ".readers",
    "Table": ".table",
}
__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = ["FORMAT", "MIN_FREE_BYTES", "TABLE_KINDS", "CheckReport", "Damage",
           "DamageError", "Store", "StoreError", "Table", "TableCheck", "check", "map_names",
           "maps_in", "open_h5", "read", "reading"]
