"""The allocation of an ensemble (Slurm, PSMPI_HOSTS, this machine) and the scheduler that
places psets on it, on fake environments."""

import random

import pytest

from psmpi.backends import allocation
from psmpi.backends.allocation import Allocation, Node
from psmpi.backends.scheduling import CpuPool, Request, Scheduler, place, request_for
from psmpi.errors import ConfigError, PsetError


def test_slurm_hostlist_and_counts():
    assert allocation.expand_hostlist("node[01-04,07]") == [
        "node01", "node02", "node03", "node04", "node07"]
    assert allocation.expand_hostlist("a1,b[9-10]") == ["a1", "b9", "b10"]
    assert allocation.expand_counts("36(x4),18") == [36] * 4 + [18]
    with pytest.raises(ConfigError, match="36x"):
        allocation.expand_counts("36x")


def test_allocation_from_slurm_with_gpus():
    alloc = allocation.detect({"SLURM_JOB_NODELIST": "gpu[1-2],cpu7",
                               "SLURM_JOB_CPUS_PER_NODE": "8(x2),4", "SLURM_JOB_GPUS": "0,1"})
    assert alloc.slurm and alloc.source == "slurm"
    assert alloc.nodes == (Node("gpu1", 8, ("0", "1")), Node("gpu2", 8, ("0", "1")),
                           Node("cpu7", 4, ("0", "1")))
    assert alloc.cores == 20
    one_count = allocation.detect({"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_JOB_CPUS_PER_NODE": "2"})
    assert [n.cores for n in one_count.nodes] == [2, 2, 2]


def test_allocation_from_psmpi_hosts_and_hostfile(tmp_path):
    alloc = allocation.detect({"PSMPI_HOSTS": "node1:8,node2:4", "SLURM_JOB_NODELIST": "x1"})
    assert alloc.nodes == (Node("node1", 8), Node("node2", 4)) and not alloc.slurm
    faked = allocation.detect({"PSMPI_HOSTS": "localhost:4", "PSMPI_NODE_GPUS": "2"})
    assert faked.nodes == (Node("localhost", 4, ("0", "1")),)
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the nodes\nn1 slots=6\nn2:2\nn3\n")
    assert allocation.detect({"PSMPI_HOSTS": str(hostfile)}).nodes == (
        Node("n1", 6), Node("n2", 2), Node("n3", 1))
    with pytest.raises(ConfigError, match="host:cores"):
        allocation.detect({"PSMPI_HOSTS": "node1:x"})


def test_allocation_of_this_machine():
    alloc = allocation.detect({"PSMPI_NODE_GPUS": "0,3"})
    assert alloc.source == "this machine" and len(alloc.nodes) == 1
    assert alloc.nodes[0].cores >= 1 and alloc.nodes[0].gpus == ("0", "3")


def test_requests_are_checked_and_name_the_pset():
    assert request_for({"ranks": 2}, {"a": 1}, 0) == Request(2)
    assert request_for(lambda p: {"ranks": p["n"], "gpus_per_rank": 1}, {"n": 3}, 5) == Request(3, 1, 1)
    with pytest.raises(PsetError, match=r"pset 4 \{'a': 1\}.*unknown key"):
        request_for({"rank": 2}, {"a": 1}, 4)
    with pytest.raises(PsetError, match="ranks must be an integer >= 1"):
        request_for({"ranks": 0}, {"a": 1}, 4)


def test_a_pset_that_can_never_fit_is_refused_naming_the_allocation():
    scheduler = Scheduler(Allocation((Node("n1", 4), Node("n2", 4, ("0",))), "PSMPI_HOSTS"))
    scheduler.check(0, "pset 0", Request(8))  # spread over both nodes: fits
    with pytest.raises(ConfigError, match=r"pset 3 \{'a': 9\} asks for 9 rank.*n1: 4 cores"):
        scheduler.check(3, "pset 3 {'a': 9}", Request(9))
    with pytest.raises(ConfigError, match="GPU"):
        scheduler.check(1, "pset 1", Request(2, gpus_per_rank=1))
    with pytest.raises(ConfigError, match="whole node"):
        scheduler.check(1, "pset 1", Request(1, nodes=3))


def test_placement_prefers_one_node_and_gives_distinct_gpus():
    nodes = (Node("a", 4, ("0", "1")), Node("b", 2, ("0", "1")))
    free = {n.name: (n.cores, n.gpus) for n in nodes}
    assert place(Request(2), free, nodes).hosts == (("b", 2, ()),)  # the fullest that fits
    assert place(Request(5), free, nodes).hosts == (("a", 4, ()), ("b", 1, ()))
    assert place(Request(2, 2), free, nodes).hosts == (("a", 2, ()),)
    scheduler = Scheduler(Allocation(nodes, "test"))
    for key in range(3):
        scheduler.add(key, Request(1, gpus_per_rank=1))
    started = dict(scheduler.start())
    gpus = [(p.hosts[0][0], p.gpus) for p in started.values()]
    assert len(set(gpus)) == 3 and all(len(g) == 1 for _, g in gpus)


def test_backfill_and_no_starvation():
    """Random psets of 1-4 ranks on 4+2 cores: never more than the allocation at once, small
    psets back-fill, and a big pset waits a bounded number of passes."""
    nodes = (Node("a", 4), Node("b", 2))
    rng = random.Random(1)
    scheduler = Scheduler(Allocation(nodes, "test"), max_passes=3)
    sizes = {key: rng.choice([1, 1, 2, 3, 6]) for key in range(200)}
    for key, size in sizes.items():
        scheduler.add(key, Request(size))
    order, running, passes = [], [], {}
    while not scheduler.idle:
        for key, placement in scheduler.start():
            assert placement.ranks == sizes[key]
            order.append(key)
            running.append(key)
        used = sum(sizes[key] for key in running)
        assert used <= 6
        assert sum(free for free, _ in scheduler.free.values()) == 6 - used
        for key in scheduler.waiting:
            passes[key] = scheduler.waiting[key][1]
        scheduler.release(running.pop(rng.randrange(len(running))))
    assert sorted(order) == list(range(200))
    assert max(passes.values()) <= 3
    backfilled = [key for position, key in enumerate(order) if key > order[position - 1] + 1]
    assert backfilled  # some psets started before older ones


def test_whole_nodes_are_exclusive():
    nodes = (Node("a", 4), Node("b", 4), Node("c", 4))
    scheduler = Scheduler(Allocation(nodes, "test"))
    scheduler.add("small", Request(1))
    scheduler.add("big", Request(3, nodes=2))
    started = dict(scheduler.start())
    assert started["small"].hosts == (("a", 1, ()),)
    assert started["big"].hosts == (("b", 2, ()), ("c", 1, ()))
    assert scheduler.free == {"a": (3, ()), "b": (0, ()), "c": (0, ())}
    scheduler.release("big")
    assert scheduler.free["b"] == (4, ()) and scheduler.free["c"] == (4, ())


def test_pinned_psets_running_at_once_get_disjoint_core_ids():
    """Random starts and ends on 8 cores: the ids of psets running at once never overlap,
    and each pset gets as many ids as its ranks x cores per rank."""
    rng = random.Random(3)
    scheduler = Scheduler(Allocation((Node("localhost", 8),), "this machine"))
    pool = CpuPool([0, 1, 2, 3, 10, 11, 12, 13])
    for key in range(100):
        scheduler.add(key, Request(rng.randint(1, 4), cores_per_rank=rng.choice([1, 2])))
    running: dict[int, tuple[int, ...]] = {}
    while scheduler.waiting or running:
        for key, placement in scheduler.start():
            pinned = pool.take(key, placement)
            assert len(pinned.cpus) == pinned.ranks * pinned.cores_per_rank
            running[key] = pinned.cpus
        in_use = [cpu for cpus in running.values() for cpu in cpus]
        assert len(in_use) == len(set(in_use)) and set(in_use) <= {0, 1, 2, 3, 10, 11, 12, 13}
        done = rng.choice(sorted(running))
        scheduler.release(done)
        pool.give_back(done)
        del running[done]
    assert pool.free == [0, 1, 2, 3, 10, 11, 12, 13]
