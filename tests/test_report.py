"""`psmpi report`: pictures drawn from a real run; the timeline's time axis and lanes."""

import base64
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from psmpi.tools import report

TIMEOUT = 120
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Two worker processes, psets sleeping 10-80 ms (so the timeline shows who ran what), one
# failing pset, and a second map.
STUDY = textwrap.dedent("""
    import time
    import psmpi

    def nap(pset):
        time.sleep(0.01 * (1 + pset["i"] % 8))
        if pset["i"] == 5:
            raise RuntimeError("no sleep for pset 5")
        return {"slept": 0.01 * (1 + pset["i"] % 8)}

    def twice(pset):
        return {"y": 2 * pset["i"]}

    psmpi.map(nap, [{"i": i} for i in range(24)], backend="multiprocessing", ncores=2,
              out="study.h5", verbose=0)
    psmpi.map(twice, [{"i": i} for i in range(5)], backend="serial", out="study.h5", verbose=0)
""")


def env():
    return {k: v for k, v in os.environ.items() if not k.startswith("PSMPI_")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    (directory / "study.py").write_text(STUDY)
    proc = subprocess.run([sys.executable, "study.py"], cwd=directory, capture_output=True,
                          text=True, timeout=TIMEOUT, env=env())
    assert proc.returncode == 0, proc.stderr
    return directory / "study.h5"


def psmpi_cmd(*args, cwd):
    return subprocess.run([sys.executable, "-m", "psmpi", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT, env=env())


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_writes_a_png_and_an_html_page_embedding_it(study):
    proc = psmpi_cmd("report", study, cwd=study.parent)
    assert proc.returncode == 0, proc.stderr
    png = study.parent / "study-report.png"
    data = png.read_bytes()
    width, height = png_size(data)
    assert width >= 1000 and height >= 700
    import matplotlib.image

    pixels = matplotlib.image.imread(png)  # decodes: a valid image, not just a header
    assert pixels.shape[:2] == (height, width)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20  # drawn, not blank
    page = (study.parent / "study-report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert f'src="data:image/png;base64,{base64.b64encode(data).decode()}"' in page
    assert "<td>nap</td>" in page and "<td>twice</td>" in page


def test_report_options_output_path_map_and_no_html(study, tmp_path):
    target = tmp_path / "pictures" / "nap.png"
    target.parent.mkdir()
    proc = psmpi_cmd("report", study, "--map", "nap", "-o", target, "--no-html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    png_size(target.read_bytes())
    assert not list(target.parent.glob("*.html"))
    proc = psmpi_cmd("report", study, "--map", "nope", "-o", target, cwd=tmp_path)
    assert proc.returncode == 2 and "no map 'nope'" in proc.stderr


def test_report_of_a_map_with_no_rows_is_still_a_picture(tmp_path):
    (tmp_path / "empty.py").write_text(
        "import psmpi\npsmpi.map(lambda p: {}, [], backend='serial', out='empty.h5', verbose=0)\n")
    subprocess.run([sys.executable, "empty.py"], cwd=tmp_path, check=True, timeout=TIMEOUT, env=env())
    proc = psmpi_cmd("report", "empty.h5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    png_size((tmp_path / "empty-report.png").read_bytes())


def test_import_psmpi_does_not_import_matplotlib():
    code = ("import sys, psmpi, psmpi.cli; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=TIMEOUT, env=env())


def test_missing_matplotlib_names_the_extra_to_install(study):
    code = ("import sys; sys.modules['matplotlib'] = None; from psmpi.cli import main; "
            f"sys.exit(main(['report', {str(study)!r}, '-o', 'x.png']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=study.parent, capture_output=True,
                          text=True, timeout=TIMEOUT, env=env())
    assert proc.returncode == 2
    assert "pip install 'psmpi[report]'" in proc.stderr


# ---------------------------------------------------------------------- pieces
def test_time_axis_cuts_long_idle_gaps_and_keeps_order():
    starts = np.array([0.0, 1.0, 2.0, 1000.0, 1001.0])
    ends = starts + 0.5
    axis = report.TimeAxis(starts + 5e8, ends + 5e8)
    plotted = axis(np.sort(np.concatenate([starts, ends])) + 5e8)
    assert np.all(np.diff(plotted) >= 0)
    assert plotted[-1] < 10  # the 997 idle seconds are gone
    assert len(axis.gaps) == 1 and axis.gaps[0][1] == pytest.approx(997.5)
    assert 2.5 <= axis.gaps[0][0] <= plotted[-1]
    short = report.TimeAxis(np.array([0.0, 30.0]), np.array([1.0, 31.0]))
    assert not short.gaps and short(31.0) == 31.0


def frame(hosts, ranks, pids, starts, runtime=1.0):
    n = len(starts)
    return pd.DataFrame({"_time_utc": np.asarray(starts, float), "_pset_runtime": np.full(n, runtime),
                         "_host": hosts, "_rank": ranks, "_pid": pids})


def test_lanes_are_ranks_under_mpi_and_reused_by_processes_one_after_the_other():
    mpi = report.events({"m": (frame(["h"] * 3, [2, 1, 2], [10, 11, 10], [0, 0, 1]), frame([], [], [], []))})
    lane, labels, processes = report.lanes(mpi)
    assert labels == ["worker 1", "worker 2"] and lane.tolist() == [1, 0, 1] and processes == 2
    # pid 7 ran after pid 5 died: one lane; pid 6 ran alongside: its own lane.
    pool = report.events({"m": (frame(["h"] * 4, [0] * 4, [5, 6, 7, 7], [0, 0.5, 2, 3]),
                                frame([], [], [], []))})
    lane, labels, processes = report.lanes(pool)
    assert lane.tolist() == [0, 1, 0, 0] and labels == ["worker 1", "worker 2"] and processes == 3
    apart = report.events({"m": (frame(["a", "b"], [0, 0], [5, 5], [0, 0]), frame([], [], [], []))})
    assert report.lanes(apart)[1] == ["a pid 5", "b pid 5"]
    # A pset that crashed its process is stored without one (pid -1): a lane of its own.
    crashed = frame(["h"], [-1], [-1], [0.5]).assign(_kind="crashed")
    lane, labels, _ = report.lanes(report.events({"m": (frame(["h"], [0], [5], [0]), crashed)}))
    assert lane.tolist() == [0, 1] and labels == ["pid 5", "process unknown"]


def test_busy_share_counts_the_time_the_survey_ran_not_the_gap_between_runs():
    # Two workers busy all the time in a first run, killed; a resumed run 1000 s later
    # with two new worker processes, busy all the time too.
    starts = [0, 0, 1, 1, 1000, 1000, 1001, 1001]
    pids = [5, 6, 5, 6, 8, 9, 8, 9]
    ev = report.events({"m": (frame(["h"] * 8, [0] * 8, pids, starts), frame([], [], [], []))})
    axis = report.TimeAxis(ev["start"].to_numpy(), ev["end"].to_numpy())
    assert report.busy_share(ev, axis) == pytest.approx(1.0)
    # One worker of two idles for the first second: 3 + 4 busy seconds of 4 + 4.
    half = report.events({"m": (frame(["h"] * 7, [0] * 7, pids[1:], starts[1:]),
                                frame([], [], [], []))})
    axis = report.TimeAxis(half["start"].to_numpy(), half["end"].to_numpy())
    assert report.busy_share(half, axis) == pytest.approx(7 / 8)


def share_of(pixels: np.ndarray, colour: str, tolerance: float = 0.06) -> float:
    """The share of ``pixels`` (RGB(A) floats) within ``tolerance`` of a hex colour."""
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return float((np.abs(pixels[..., :3] - rgb).max(axis=-1) < tolerance).mean())


def test_the_report_page_as_a_browser_shows_it(study, tmp_path):
    """A screenshot of the HTML page in headless Chromium: the table and the picture are
    there, the bars are drawn in the map's colour and the failed attempt in red, and the
    runtime legend covers no bar (the picture keeps head room for it)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs chromium (.ci/run); it is missing")
        pytest.skip("no chromium here (apt-get install chromium)")
    assert psmpi_cmd("report", study, cwd=study.parent).returncode == 0
    shot = tmp_path / "page.png"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--window-size=1300,1100",
                           f"--screenshot={shot}", (study.parent / "study-report.html").as_uri()],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert shot.exists(), proc.stderr
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1100, 1300)
    assert share_of(pixels, "#1f77b4") > 0.02   # the bars of the first map
    assert share_of(pixels, "#d62728", 0.1) > 0.0005  # the failed pset, in red
    top = pixels[:200]   # the page's title and status table, dark text on white
    assert share_of(top, "#ffffff") > 0.7 and (top[..., :3].max(axis=-1) < 0.3).mean() > 0.005


def test_multiprocessing_rows_name_their_worker_in_rank_and_the_report_draws_a_lane_each(study):
    import psmpi

    ranks = psmpi.read(study, name="nap")["_rank"]
    assert set(ranks) <= {1, 2} and len(set(ranks)) == 2, ranks.value_counts()  # ncores=2
    ev = report.events({"nap": (psmpi.read(study, name="nap"),
                                psmpi.read(study, name="nap", failures=True))})
    assert report.lanes(ev)[1] == ["worker 1", "worker 2"]
