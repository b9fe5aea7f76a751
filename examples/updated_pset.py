"""psweep's style: the worker returns the updated pset, ``return {**pset, "result": ...}``.

The psets hold a list (the initial state) and a dict (the solver's options) next to
numbers; the results repeat the pset's keys with their values unchanged, which psmpi
accepts (a changed value would fail the pset, naming the key). A trajectory of a length
that differs from pset to pset is stored too. The second map adds longer runs to the same
map name: the psets computed before are resumed by their hash, only the new ones run.
"""

import numpy as np

import psmpi
from psmpi import params


def oscillate(pset):
    """A damped oscillator, stepped with semi-implicit Euler."""
    x, v = pset["start"]
    omega, damping = pset["omega"], pset["damping"]
    dt, steps = pset["solver"]["dt"], pset["solver"]["steps"]
    trace = np.empty(steps)
    for i in range(steps):
        v += (-omega * omega * x - 2 * damping * omega * v) * dt
        x += v * dt
        trace[i] = x
    energy = 0.5 * (v * v + omega * omega * x * x)
    return {**pset, "end": [x, v], "energy": energy, "trace": trace}


psmpi.init()  # under mpiexec, worker ranks stay here; what follows runs on rank 0 only

short = params.product({"omega": [1.0, 2.0]}, {"damping": [0.0, 0.2]},
                       {"start": [[1.0, 0.0], [0.0, 1.0]]},
                       {"solver": {"dt": 0.01, "steps": 200}})
first = psmpi.map(oscillate, short, name="oscillator", verbose=0)
df = first.results
print(df[["omega", "damping", "start", "energy"]].to_string())
assert len(df) == 8 and len(first.missing) == 0
assert all(isinstance(s, list) for s in df["start"]) and df["solver"].iloc[0]["steps"] == 200
assert all(len(t) == 200 for t in df["trace"])
# no damping keeps the energy (up to the integrator's error); damping loses it
undamped = df[df["damping"] == 0.0]
assert np.allclose(undamped["energy"], [0.5 * (v * v + w * w * x * x) for (x, v), w
                                        in zip(undamped["start"], undamped["omega"])], rtol=0.05)

longer = short + params.product({"omega": [1.0, 2.0]}, {"damping": [0.0, 0.2]},
                                {"start": [[1.0, 0.0], [0.0, 1.0]]},
                                {"solver": {"steps": 400, "dt": 0.01}})
second = psmpi.map(oscillate, longer, name="oscillator", verbose=0)
print(f"second map: {second.progress.resumed} resumed, {second.stats.computed} computed")
assert second.progress.resumed >= 8 and len(second.results) == 16
assert sorted(len(t) for t in second.results["trace"]) == [200] * 8 + [400] * 8
