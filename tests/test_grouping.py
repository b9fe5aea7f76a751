"""Group sizes: one pset until every worker measured one, then ~TARGET_SECONDS per group."""

from psmpi.driver.grouping import MAX_GROUP_SIZE, TARGET_SECONDS, Grouper
from psmpi.worker.task import GroupOutcome


def outcome(*runtimes):
    n = len(runtimes)
    return GroupOutcome(list(range(n)), [""] * n, [b""] * n, {}, [0.0] * n, list(runtimes),
                        1, "host", 1)


def items(n):
    return ((i, {"a": i}) for i in range(n))


def test_fixed_group_size():
    sizes = [len(g) for g in Grouper(items(10), 4, 10, group_size=3)]
    assert sizes == [3, 3, 3, 1]


def test_single_psets_until_every_worker_measured_one():
    grouper = Grouper(items(10_000), 4, 10_000, None)
    groups = iter(grouper)
    assert [len(next(groups)) for _ in range(4)] == [1, 1, 1, 1]
    grouper.observe(outcome(1e-6, 1e-6, 1e-6))  # three of four workers measured
    assert len(next(groups)) == 1
    grouper.observe(outcome(1e-6))
    # 0.05 s / 1 µs would be 50,000 psets: capped by MAX_GROUP_SIZE, then by the tail rule
    # (remaining 9,995 / (2 x 4 workers) = 1,250)
    assert len(next(groups)) == min(MAX_GROUP_SIZE, 1250)


def test_size_aims_at_target_seconds_and_shrinks_at_the_end():
    grouper = Grouper(items(1000), 2, 1000, None)
    groups = iter(grouper)
    next(groups), next(groups)
    grouper.observe(outcome(TARGET_SECONDS / 10, TARGET_SECONDS / 10))
    assert len(next(groups)) == 10
    sizes = [len(g) for g in groups]
    assert sizes[-1] == 1 and sum(sizes) == 1000 - 12
    assert max(sizes[-8:]) < 10 and sizes[-3:] == [1, 1, 1]  # the tail is cut finer


def test_crashed_psets_do_not_count_as_measured():
    grouper = Grouper(items(100), 1, 100, None)
    groups = iter(grouper)
    next(groups)
    grouper.observe(outcome(float("nan")))
    assert len(next(groups)) == 1


def test_thousands_of_workers_get_groups_long_enough_for_rank_0_to_keep_up():
    from psmpi.driver.grouping import MASTER_SECONDS_PER_GROUP, MASTER_SHARE
    assert Grouper(items(1), 8, None, None).target_seconds() == TARGET_SECONDS
    many = 10_000
    grouper = Grouper(items(10**6), many, None, None)
    assert grouper.target_seconds() == many * MASTER_SECONDS_PER_GROUP / MASTER_SHARE == 2.0
    groups = iter(grouper)
    for _ in range(many):
        next(groups)
    grouper.observe(outcome(*[0.1] * many))  # every worker measured a 0.1-s pset
    # 2 s of work per group: rank 0 sends 5,000 groups/s to 10,000 workers, not 100,000
    assert len(next(groups)) == 20
