"""Integrity of results files: nothing outside the file is followed, every byte psmpi wrote
is checksummed, damage is a StoreError naming where, ``psmpi check`` tells what is left,
files of the earlier format still work, and an empty ``out=`` file is a new file."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pandas as pd
import pytest

import psmpi
from psmpi import cli, store
from psmpi.errors import PsmpiError, StoreError
from psmpi.store import Store


def put(table: store.Table, rows: list[dict]) -> range:
    for r in rows:
        assert table.admit(r) is None, r
    return table.append(rows)


def small_file(path) -> None:
    """A results file with int, float, str, array and null values, and a failures table."""
    with Store.open(path) as s:
        put(s.table("m"), [{"a": i, "y": i / 4, "s": f"s{i}é", "v": np.arange(3) * i,
                            "o": None if i % 3 else i} for i in range(20)])
        put(s.table("m", "failures"), [{"a": 99, "_kind": "exception", "_exception": "E"}])


# ---------------------------------------------------------------- nothing outside the file
def _target(tmp_path) -> str:
    """Another HDF5 file whose contents a crafted results file tries to reach."""
    target = str(tmp_path / "secret.h5")
    with h5py.File(target, "w") as f:
        f.create_dataset("data", data=np.arange(20, dtype=np.int64) + 1000, maxshape=(None,))
    return target


def _craft(path, target: str, how: str) -> None:
    """Replace column 'a' of map 'm' by ``how``, which reaches into ``target``."""
    with h5py.File(path, "a") as f:
        cols = f["m/results/columns"]
        del cols["a"]
        if how == "external storage":
            raw = str(target) + ".raw"
            np.arange(20, dtype=np.int64).tofile(raw)
            cols.create_dataset("a", shape=(20,), maxshape=(None,), dtype=np.int64,
                                external=[(raw, 0, h5py.h5f.UNLIMITED)])
        elif how == "external link":
            cols["a"] = h5py.ExternalLink(target, "/data")
        elif how == "soft link":
            f["m/elsewhere"] = h5py.ExternalLink(target, "/data")
            cols["a"] = h5py.SoftLink("/m/elsewhere")
        elif how == "virtual dataset":
            layout = h5py.VirtualLayout(shape=(20,), dtype=np.int64, maxshape=(None,))
            layout[:] = h5py.VirtualSource(target, "data", shape=(20,))
            cols.create_virtual_dataset("a", layout)


def _fingerprint(target: str) -> tuple:
    files = [target, target + ".raw"]
    return tuple(open(p, "rb").read() if os.path.exists(p) else None for p in files)


CRAFTS = ["external storage", "external link", "soft link", "virtual dataset"]


@pytest.mark.parametrize("how", CRAFTS)
def test_links_and_storage_out_of_the_file_are_refused(tmp_path, how):
    path, target = tmp_path / "study.h5", _target(tmp_path)
    with Store.open(path) as s:
        put(s.table("m"), [{"a": i, "y": i / 2} for i in range(20)])
    _craft(path, target, how)
    before = _fingerprint(target)
    word = {"soft link": "elsewhere"}.get(how, "a")
    with pytest.raises(StoreError, match=rf"{how}.*'[^']*{word}'|'[^']*{word}'.*{how}"):
        store.read(path)
    with pytest.raises(StoreError, match=how):
        with Store.open(path) as s:  # map() resuming opens it so
            put(s.table("m"), [{"a": 20, "y": 10.0}])
    assert cli.main(["export", str(path), "--csv", str(tmp_path / "out.csv")]) == cli.EXIT_USAGE
    assert not os.path.exists(tmp_path / "out.csv")
    assert _fingerprint(target) == before


READS_A_FIFO = textwrap.dedent("""
    import sys
    from psmpi import store
    from psmpi.errors import StoreError
    try:
        store.read(sys.argv[1])
    except StoreError as exc:
        print("refused:", exc)
""")


@pytest.mark.parametrize("how", CRAFTS)
def test_the_target_is_never_opened(tmp_path, how):
    # The target is a FIFO: opening it for reading blocks until a writer comes, so a reader
    # that followed the link or the storage would hang here.
    path, target = tmp_path / "study.h5", _target(tmp_path)
    with Store.open(path) as s:
        put(s.table("m"), [{"a": i} for i in range(20)])
    _craft(path, target, how)
    for fifo in (target, target + ".raw"):
        if os.path.exists(fifo):
            os.remove(fifo)
        os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-c", READS_A_FIFO, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.startswith("refused:"), done.stdout + done.stderr


def test_a_soft_link_inside_the_file_is_refused_too(tmp_path):
    path = tmp_path / "study.h5"
    small_file(path)
    with h5py.File(path, "a") as f:
        f["m/results/columns/b"] = h5py.SoftLink("/m/results/columns/a")
    with pytest.raises(StoreError, match="'m/results/columns/b' is a soft link"):
        store.read(path)


def test_the_link_walk_is_cheap_on_a_file_of_many_maps(tmp_path):
    path = tmp_path / "many.h5"
    with Store.open(path) as s:
        for m in range(40):
            put(s.table(f"m{m}"), [{f"c{j}": j for j in range(20)}])
    t0 = time.perf_counter()
    with store.open_h5(str(path), "r"):
        pass
    assert time.perf_counter() - t0 < 2.0  # about 40 * 25 links: a few ms


# ---------------------------------------------------------------- checksums
def test_every_dataset_psmpi_writes_is_checksummed(tmp_path):
    path = tmp_path / "study.h5"
    small_file(path)
    with Store.open(path) as s:  # a widening copy and a new mask are checksummed as well
        put(s.table("m"), [{"a": 1.5, "s": None}])
    found = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                found.append(name)
                if name.endswith("n_committed"):  # in the object header, which HDF5 checksums
                    assert obj.id.get_create_plist().get_layout() == h5py.h5d.COMPACT, name
                else:
                    assert obj.fletcher32, name
        f.visititems(visit)
        assert f.id.get_create_plist().get_version()[0] == 2  # checksummed superblock
    assert "m/results/nulls/s" in found and "m/failures/columns/_kind" in found


def _flip(path, at: int, out) -> None:
    data = bytearray(open(path, "rb").read())
    data[at] ^= 0x5A
    open(out, "wb").write(bytes(data))


def _chunk_offset(path, dataset: str) -> int:
    with h5py.File(path, "r") as f:
        return f[dataset].id.get_chunk_info(0).byte_offset


def test_a_damaged_chunk_names_file_map_column_and_rows(tmp_path):
    path, bad = tmp_path / "study.h5", tmp_path / "bad.h5"
    small_file(path)
    _flip(path, _chunk_offset(path, "m/results/columns/y") + 8 * 5, bad)  # row 5
    with pytest.raises(StoreError, match=r"'m/results' of .*bad\.h5: column 'y', rows 0-19 "):
        store.read(bad)
    report = store.check(bad)
    assert report.damaged
    (t,) = [t for t in report.tables if t.table == "results"]
    assert [(d.column, d.rows) for d in t.damaged] == [("y", (0, 20))]
    assert t.intact == [] and "column 'y'" in report.text()


def test_an_old_file_with_a_bad_utf8_string_is_a_store_error(tmp_path):
    path = tmp_path / "old.h5"
    write_old_format(path)
    with h5py.File(path, "a") as f:
        f["m/results/columns/s"][1] = b"\xff\xfe"
    with pytest.raises(StoreError, match=r"column 's'.*rows"):
        store.read(path)
    report = store.check(path)
    assert report.damaged and [d.column for t in report.tables for d in t.damaged] == ["s"]


def _expected(path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return store.read(path), store.read(path, failures=True)


def _same(got: pd.DataFrame, want: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(got, want)
    except AssertionError:
        return False
    return True


def corpus_worker(pset):
    if pset["i"] % 7 == 3:
        raise ValueError(f"bad {pset['i']}")
    return {"n": pset["i"] * 3, "x": pset["i"] / 8, "s": f"r{pset['i']}✓",
            "v": np.full(2, pset["i"], np.int32)}


def test_byte_flips_give_the_right_values_or_a_store_error(tmp_path, serial_session):
    path = tmp_path / "study.h5"
    psets = [{"i": i} for i in range(24)]
    psmpi.map(corpus_worker, psets[:16], out=str(path), name="m", backend="serial")
    want = _expected(path)
    full = psmpi.map(corpus_worker, psets, out=str(tmp_path / "full.h5"), name="m", backend="serial")
    missing = full.missing.df["_pset_index"].tolist()
    size = os.path.getsize(path)
    raw, rows = _raw_data(path)
    rng = random.Random(12)
    meta = np.flatnonzero(~raw)
    positions = ([rng.randrange(size) for _ in range(40)] + [int(rng.choice(meta)) for _ in range(80)]
                 + [int(rng.choice(rows)) for _ in range(80)])
    outcomes = {"same": 0, "StoreError": 0}
    for k, at in enumerate(positions):
        bad = tmp_path / f"bad{k}.h5"
        _flip(path, at, bad)
        try:
            got = _expected(bad)
        except StoreError:
            outcomes["StoreError"] += 1
            assert store_check_says_damaged(bad), at
        else:
            outcomes["same"] += 1
            assert _same(got[0], want[0]) and _same(got[1], want[1]), at
        if k % 4 == 0:  # resuming, on a quarter of them (a map() takes a while)
            try:
                res = psmpi.map(corpus_worker, psets, out=str(bad), name="m", backend="serial")
            except StoreError:
                pass
            else:
                assert _same(res.results, full.results), at
                assert res.missing.df["_pset_index"].tolist() == missing, at
        os.remove(bad)
    assert outcomes["StoreError"] > 20 and outcomes["same"] > 0, outcomes


def _raw_data(path) -> tuple[np.ndarray, np.ndarray]:
    """Where the chunks of the file are (a mask of its bytes), and the bytes of committed rows."""
    raw = np.zeros(os.path.getsize(path), bool)
    rows = []

    def visit(name: str, ds) -> None:
        if not isinstance(ds, h5py.Dataset) or not ds.chunks:
            return
        n = int(ds.parent.parent["n_committed"][()])
        row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:]))
        for k in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(k)
            raw[info.byte_offset:info.byte_offset + info.size] = True
            first = info.chunk_offset[0]
            used = max(0, min(n - first, ds.chunks[0])) * row_bytes
            rows.extend(range(info.byte_offset, info.byte_offset + used))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return raw, np.array(rows)


def store_check_says_damaged(path) -> bool:
    try:
        return store.check(path).damaged
    except StoreError:  # the file cannot be opened at all: that is damage said too
        return True


def test_a_chunk_torn_by_a_killed_writer_is_mended_by_the_next_writer(tmp_path):
    # A kill between two pages of the in-place rewrite of a column's last chunk: the
    # committed rows' bytes are the same in the old and the new chunk, the rest (rows past
    # n_committed, the checksum) a mix. Here: the rows past n_committed changed.
    path = tmp_path / "study.h5"
    with Store.open(path) as s:
        put(s.table("m"), [{"a": i, "s": f"s{i}", "o": None if i == 1 else i} for i in range(3)])
    with h5py.File(path, "r") as f:
        offsets = {name: f[f"m/results/{name}"].id.get_chunk_info(0).byte_offset
                   for name in ("columns/a", "columns/s", "nulls/o")}
    data = bytearray(open(path, "rb").read())
    data[offsets["columns/a"] + 8 * 5] ^= 0xFF      # row 5 of a
    data[offsets["columns/s"] + 16 * 3 + 2] ^= 0xFF  # row 3 of s
    data[offsets["nulls/o"] + 7] ^= 0x01              # row 7 of o's mask
    open(path, "wb").write(bytes(data))
    df = store.read(path)  # readers take the committed rows the checksum proves intact
    assert df["a"].tolist() == [0, 1, 2] and df["s"].tolist() == ["s0", "s1", "s2"]
    assert not store.check(path).damaged
    with pytest.warns(UserWarning, match="rows 0-2 of column 'a' were rewritten"):
        with Store.open(path) as s:
            put(s.table("m"), [{"a": 3, "s": "s3"}])
    df = store.read(path)
    assert df["a"].tolist() == [0, 1, 2, 3] and df["s"].tolist() == ["s0", "s1", "s2", "s3"]
    assert np.isnan(df["o"][1]) and np.isnan(df["o"][3]) and df["o"][2] == 2
    assert not store.check(path).damaged
    data = bytearray(open(path, "rb").read())  # a flip in a committed row is not a torn write
    with h5py.File(path, "r") as f:
        data[f["m/results/columns/a"].id.get_chunk_info(0).byte_offset + 8] ^= 0x10  # row 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(StoreError, match="column 'a', rows 0-3"):
        with Store.open(path) as s:
            s.table("m").read()


# ---------------------------------------------------------------- errors are PsmpiErrors
def test_damage_reached_through_every_reader_is_a_psmpi_error(tmp_path, capsys):
    path, bad = tmp_path / "study.h5", tmp_path / "bad.h5"
    small_file(path)
    _flip(path, _chunk_offset(path, "m/results/columns/s") + 3, bad)
    for read in (lambda: store.read(bad), lambda: Store.open(bad).table("m").read()):
        with pytest.raises(PsmpiError):
            read()
    for argv in (["show", str(bad)], ["export", str(bad), "--csv", "-"]):
        assert cli.main(argv) == cli.EXIT_USAGE
        assert "column 's'" in capsys.readouterr().err


def test_psmpi_check_says_what_is_damaged_and_what_is_intact(tmp_path, capsys):
    path, bad = tmp_path / "study.h5", tmp_path / "bad.h5"
    with Store.open(path) as s:  # commits smaller than BIG_COMMIT_ROWS: 8-KiB chunks
        for lo in range(0, 5000, 1000):
            put(s.table("m"), [{"a": i, "b": float(i)} for i in range(lo, lo + 1000)])
    assert cli.main(["check", str(path)]) == cli.EXIT_OK
    assert "no damage" in capsys.readouterr().out
    with h5py.File(path, "r") as f:
        b = f["m/results/columns/b"]
        step, last = b.chunks[0], b.id.get_num_chunks() - 1
        assert last >= 2
        second, end = b.id.get_chunk_info(1).byte_offset, b.id.get_chunk_info(last).byte_offset
    _flip(path, second + 16, bad)
    _flip(bad, end, bad)
    report = store.check(bad)
    (t,) = report.tables
    assert [(d.column, d.rows) for d in t.damaged] == [("b", (step, 2 * step)), ("b", (last * step, 5000))]
    assert t.intact == [(0, step), (2 * step, last * step)] and t.n_rows == 5000
    assert cli.main(["check", str(bad)]) == cli.EXIT_BAD
    out = capsys.readouterr().out
    assert f"column 'b', rows {step}-{2 * step - 1}" in out and "intact" in out


# ---------------------------------------------------------------- the earlier format
def write_old_format(path) -> None:
    """A file as psmpi wrote it before checksums: no filters, n_committed a contiguous scalar,
    the default (earliest) file format."""
    with h5py.File(path, "w", track_order=True) as f:
        f.attrs["psmpi_format"] = 1
        t = f.create_group("m").create_group("results")
        t.create_dataset("n_committed", data=np.int64(3))
        cols, nulls = t.create_group("columns", track_order=True), t.create_group("nulls")
        for name, data, kind in (("a", np.array([1, 2, 3]), "int"),
                                 ("s", np.array([b"x", b"y", b"z"], "S16"), "str")):
            ds = cols.create_dataset(name, data=data, maxshape=(None,), chunks=(4096,))
            ds.attrs["kind"] = kind
        nulls.create_dataset("a", data=[False, True, False], maxshape=(None,), chunks=(8192,))


def test_files_of_the_earlier_format_read_and_resume(tmp_path):
    path = tmp_path / "old.h5"
    write_old_format(path)
    df = store.read(path)
    assert df["s"].tolist() == ["x", "y", "z"] and np.isnan(df["a"][1])
    assert not store.check(path).damaged
    with Store.open(path) as s:
        put(s.table("m"), [{"a": 4, "s": "w", "new": 1.5}])
    df = store.read(path)
    assert df["s"].tolist() == ["x", "y", "z", "w"] and df["a"].tolist()[3] == 4
    with h5py.File(path, "r") as f:
        assert f["m/results/n_committed"][()] == 4
        assert f["m/results/columns/new"].fletcher32 and not f["m/results/columns/a"].fletcher32


# ---------------------------------------------------------------- an empty out= file
def test_an_empty_existing_file_is_a_new_results_file(tmp_path):
    path = tmp_path / "study.h5"
    path.touch()
    with pytest.raises(StoreError, match="empty"):
        store.read(path)
    with Store.open(path) as s:
        put(s.table("m"), [{"a": 1}])
    assert store.read(path)["a"].tolist() == [1]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_map_writes_into_an_empty_file_from_touch(tmp_path, serial_session):
    path = tmp_path / "study.h5"
    path.touch()
    res = psmpi.map(lambda p: {"y": p["a"] * 2}, [{"a": 1}, {"a": 2}], out=str(path), verbose=0)
    assert res.results["y"].tolist() == [2, 4] and store.read(path)["y"].tolist() == [2, 4]


def append_ints(path: str, lo: int, hi: int) -> None:
    with store.Store.open(path) as s:
        t = s.table("m")
        rows = [{"i": i} for i in range(lo, hi)]
        assert t.admit(rows[0]) is None
        t.append(rows)


def test_a_superblock_older_than_the_last_chunks_reads_and_resumes(tmp_path):
    # A writer killed inside a flush can leave a new chunk and its index on disk while the
    # superblock still has the end of allocated space from before: HDF5 then reads and
    # writes that chunk as "addr overflow". Made here by putting the old superblock back.
    path = str(tmp_path / "s.h5")
    append_ints(path, 0, 1500)
    with open(path, "rb") as fh:
        superblock = fh.read(48)  # a version-2 superblock with 8-byte addresses
    append_ints(path, 1500, 2500)  # a new chunk at the end of the file
    with open(path, "r+b") as fh:
        fh.write(superblock)
    assert store.read(path)["i"].tolist() == list(range(2500))
    append_ints(path, 2500, 7500)  # rewrites that chunk, then allocates more
    assert store.read(path)["i"].tolist() == list(range(7500))
    assert not store.check(path).damaged


DIES_BEFORE_THE_COUNTER = textwrap.dedent("""
    import os, sys, types
    import numpy as np
    from psmpi.store import Store

    class DiesAtTheCounter:  # the table's group, but writing n_committed kills the process
        def __init__(self, g):
            self.g = g
        def __getattr__(self, name):
            return getattr(self.g, name)
        def __contains__(self, key):
            return key in self.g
        def __setitem__(self, key, value):
            self.g[key] = value
        def __getitem__(self, key):
            if key == "n_committed":
                return types.SimpleNamespace(id=types.SimpleNamespace(write=lambda *a: os._exit(0)))
            return self.g[key]

    store = Store.open(sys.argv[1])
    table = store.table("m")
    rows = [{"a": i} for i in range(3)]
    table.admit(rows[0])
    table.append(rows)
    table._g = DiesAtTheCounter(table._g)
    rows = [{"a": None if i == 4 else i, "w": i / 2, "g": [i, "x"], "r": np.arange(i % 3)}
            for i in range(3, 6)]
    for row in rows:
        table.admit(row)
    table.append(rows)
    raise SystemExit("the commit did not reach n_committed")
""")


def _new_signatures(before: bytes, after: bytes, signature: bytes) -> list[int]:
    """Where HDF5 metadata blocks with ``signature`` start in ``after`` but not in ``before``."""
    at = lambda data: {m.start() for m in re.finditer(re.escape(signature), data)}  # noqa: E731
    return sorted(at(after) - at(before))


def test_columns_a_killed_commit_created_are_skipped_unread_and_retired(tmp_path):
    # A kill inside the flush of the commit that creates a column can leave the column's
    # chunk index torn (CI saw it once: "column 'w3' ... incorrect metadata checksum"). Such a
    # column holds no committed value; HDF5 cannot even delete it. Made here by a writer dying
    # between its flushed rows and n_committed, then tearing every chunk index it created.
    path = tmp_path / "study.h5"
    script = tmp_path / "dies.py"
    script.write_text(DIES_BEFORE_THE_COUNTER)
    with Store.open(path) as s:
        put(s.table("m"), [{"a": -1}])  # the file exists before the dying writer's commits
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    os.remove(f"{path}.lock")  # a dead writer's lock; Store.open reclaims it too, with a warning
    after = bytearray(path.read_bytes())
    torn = _new_signatures(before, bytes(after), b"EAHD")
    assert torn, "the dying writer created no chunk index: the test no longer tears anything"
    for at in torn:
        after[at + 8:at + 16] = b"\xff" * 8  # past the signature and version: checksum fails
    path.write_bytes(bytes(after))
    with h5py.File(path, "a") as f:
        with pytest.raises(KeyError, match="checksum"):  # why the writer retires, never deletes
            del f["m/results/columns/w"]
    df = store.read(path)
    assert df["a"].tolist() == [-1, 0, 1, 2] and list(df.columns) == ["a"]
    assert not store.check(path).damaged
    with Store.open(path) as s:
        table = s.table("m")
        assert table.columns == ["a"] and table.n_rows == 4
        put(table, [{"a": None if i == 4 else i, "w": i / 2, "g": [i, "x"], "r": np.arange(i % 3)}
                    for i in range(3, 6)])
    df = store.read(path)
    assert df["a"].tolist()[:4] == [-1, 0, 1, 2] and np.isnan(df["a"][5])
    assert df["w"].tolist()[4:] == [1.5, 2.0, 2.5] and df["g"][6] == [5, "x"]
    assert [len(v) for v in df["r"][4:]] == [0, 1, 2] and np.isnan(df["w"][0])
    assert not store.check(path).damaged
    with h5py.File(path, "r") as f:
        assert len(f["m/results/retired"]) >= 4  # columns w, g, r, their masks, heaps, shapes


DIES_BEFORE_LINKING = textwrap.dedent("""
    import os, sys
    import numpy as np
    from psmpi.store import Store, linking

    def dies(made):  # the new objects flushed, then death before any link to them
        made[0][0].file.flush()
        os._exit(0)

    store = Store.open(sys.argv[1])
    table = store.table("m")
    rows = [{"a": i} for i in range(3)]
    table.admit(rows[0])
    table.append(rows)
    linking.link = dies
    if sys.argv[2] == "map":
        store.table("m2")
    rows = [{"a": i, "w": i / 2, "g": [i, "x"], "r": np.arange(i % 3)} for i in range(3, 6)]
    for row in rows:
        table.admit(row)
    table.append(rows)
    raise SystemExit("nothing was linked")
""")


@pytest.mark.parametrize("what", ["columns", "map"])
def test_new_objects_are_whole_before_a_link_reaches_them(tmp_path, what):
    # A kill inside the flush that writes a new object's header can leave it torn; a link
    # to it would make the whole file unreadable (the walk over the file's links fails).
    # Made here: the writer dies once its new columns (or the group of a new map) are
    # flushed, before it links them, and their headers are torn.
    path = tmp_path / "study.h5"
    script = tmp_path / "dies.py"
    script.write_text(DIES_BEFORE_LINKING)
    with Store.open(path) as s:
        put(s.table("m"), [{"a": -1}])
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, str(script), str(path), what], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    os.remove(f"{path}.lock")
    after = bytearray(path.read_bytes())
    torn = [at for at in _new_signatures(before, bytes(after), b"OHDR") if at >= len(before)]
    assert torn, "the dying writer created nothing: the test tears nothing"
    for at in torn:
        after[at + 8:at + 16] = b"\xff" * 8
    path.write_bytes(bytes(after))
    df = store.read(path)
    assert df["a"].tolist() == [-1, 0, 1, 2] and list(df.columns) == ["a"]
    assert not store.check(path).damaged and store.map_names(path) == ["m"]
    with Store.open(path) as s:
        put(s.table("m"), [{"a": i, "w": i / 2, "g": [i, "x"], "r": np.arange(i % 3)}
                           for i in range(3, 6)])
        put(s.table("m2"), [{"b": 1}])
    df = store.read(path, "m")
    assert df["a"].tolist() == [-1, 0, 1, 2, 3, 4, 5] and df["g"][6] == [5, "x"]
    assert store.read(path, "m2")["b"].tolist() == [1]
    assert not store.check(path).damaged
