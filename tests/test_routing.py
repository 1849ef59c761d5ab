"""Routing tables written out by hand for small depths, one per setting (see engine/routing.py)."""
import pytest

from chipsim.engine.rules.routing import Routing


def reach_table(r, step):
    p = r.plan(step)
    return [p.reaches(l) for l in range(r.depth)]


def by_table(r, step):
    p = r.plan(step)
    return [p.updated_by(j) for j in range(r.depth)]


def test_span_1_is_greedy_whatever_the_grouping():
    for kw in (dict(), dict(schedule="alternate"), dict(grouping="chunked"),
               dict(grouping="chunked", chunk_alternate=True)):
        r = Routing(depth=4, span=1, **kw)
        for step in (0, 1, 2):
            assert reach_table(r, step) == [(0,), (1,), (2,), (3,)], kw
            assert by_table(r, step) == [(0,), (1,), (2,), (3,)], kw
            assert [r.plan(step).sends_down(j) for j in range(4)] == [(), (), (), ()]


def test_overlapping_span_2_every_step_is_todays_dfo():
    r = Routing(depth=4, span=2)
    p = r.plan(0)
    assert reach_table(r, 0) == [(0,), (0, 1), (1, 2), (2, 3)]
    assert by_table(r, 0) == [(0, 1), (1, 2), (2, 3), (3,)]
    # only a block's own loss goes down through it (the loss above stops at it)
    assert [p.sends_down(j) for j in range(4)] == [(), (1,), (2,), (3,)]
    assert [p.finish_after(j) for j in range(4)] == [1, 2, 3, 3]
    assert reach_table(r, 7) == reach_table(r, 0)


def test_overlapping_span_3_every_step():
    r = Routing(depth=5, span=3)
    p = r.plan(0)
    assert reach_table(r, 0) == [(0,), (0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 4)]
    assert by_table(r, 0) == [(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4), (4,)]
    # the error of loss l passes down through l .. l-n+2; loss j+2 stops at block j
    assert [p.sends_down(j) for j in range(5)] == [(), (1, 2), (2, 3), (3, 4), (4,)]
    assert [p.finish_after(j) for j in range(5)] == [2, 3, 4, 4, 4]


def test_span_deeper_than_the_network_is_clipped_at_the_input():
    r = Routing(depth=3, span=5)
    assert reach_table(r, 0) == [(0,), (0, 1), (0, 1, 2)]
    assert by_table(r, 0) == [(0, 1, 2), (1, 2), (2,)]


def test_trifecta_alternating_olu_span_2():
    """Each block gets exactly one loss per step: its own when it is last in its group, the next
    block's when it is first. Step 0 uses losses 1, 3, 5 as in the Trifecta code."""
    r = Routing(depth=6, span=2, schedule="alternate")
    assert r.period == 2
    assert reach_table(r, 0) == [(), (0, 1), (), (2, 3), (), (4, 5)]
    assert by_table(r, 0) == [(1,), (1,), (3,), (3,), (5,), (5,)]
    assert reach_table(r, 1) == [(0,), (), (1, 2), (), (3, 4), ()]
    assert by_table(r, 1) == [(0,), (2,), (2,), (4,), (4,), ()]      # the top block waits a step
    assert reach_table(r, 2) == reach_table(r, 0) and reach_table(r, 3) == reach_table(r, 1)
    for j in range(1, 5):   # over the two steps: once by its own loss (last), once by the next (first)
        assert sorted(by_table(r, 0)[j] + by_table(r, 1)[j]) == [j, j + 1]
    p0 = r.plan(0)
    assert tuple(l for l in range(6) if p0.active(l)) == (1, 3, 5) and not p0.active(0)
    assert [p0.sends_down(j) for j in range(6)] == [(), (1,), (), (3,), (), (5,)]
    assert r.plan(1).finish_after(5) == 5                            # nothing updates it: dead at once


def test_alternating_olu_span_3_cycles_three_phases():
    r = Routing(depth=5, span=3, schedule="alternate")
    assert r.period == 3
    assert reach_table(r, 0) == [(), (), (0, 1, 2), (), ()]
    assert reach_table(r, 1) == [(0,), (), (), (1, 2, 3), ()]
    assert reach_table(r, 2) == [(), (0, 1), (), (), (2, 3, 4)]
    for step in range(3):    # the groups of one step never share a block
        assert all(len(u) <= 1 for u in by_table(r, step))


def test_chunked_span_2():
    r = Routing(depth=5, span=2, grouping="chunked")
    assert r.period == 1
    assert reach_table(r, 0) == [(), (0, 1), (), (2, 3), (4,)]
    assert by_table(r, 0) == [(1,), (1,), (3,), (3,), (4,)]
    assert [r.plan(0).sends_down(j) for j in range(5)] == [(), (1,), (), (3,), ()]
    assert reach_table(r, 1) == reach_table(r, 0)


def test_chunked_span_3_no_block_shared():
    r = Routing(depth=7, span=3, grouping="chunked")
    assert reach_table(r, 0) == [(), (), (0, 1, 2), (), (), (3, 4, 5), (6,)]
    assert [r.plan(0).sends_down(j) for j in range(7)] == [(), (2,), (2,), (), (5,), (5,), ()]
    assert [r.plan(0).finish_after(j) for j in range(7)] == [2, 2, 2, 5, 5, 5, 6]


def test_chunked_alternating_span_2_and_3():
    r = Routing(depth=5, span=2, grouping="chunked", chunk_alternate=True)
    assert r.period == 2
    assert reach_table(r, 0) == [(), (0, 1), (), (2, 3), (4,)]
    assert reach_table(r, 1) == [(0,), (), (1, 2), (), (3, 4)]
    assert reach_table(r, 2) == reach_table(r, 0)
    r3 = Routing(depth=7, span=3, grouping="chunked", chunk_alternate=True)   # boundaries move by 1
    assert reach_table(r3, 0) == [(), (), (0, 1, 2), (), (), (3, 4, 5), (6,)]
    assert reach_table(r3, 1) == [(0,), (), (), (1, 2, 3), (), (), (4, 5, 6)]


def test_every_block_in_a_chunk_or_alternation_is_updated_once_per_step():
    for r in (Routing(depth=6, span=2, grouping="chunked", chunk_alternate=True),
              Routing(depth=8, span=3, grouping="chunked")):
        for step in range(4):
            assert all(len(u) == 1 for u in by_table(r, step)), (r, step)


def test_link_is_carried_through():
    assert Routing(depth=3, span=2, link="feedback").plan(0).uses_feedback
    assert not Routing(depth=3, span=2).plan(0).uses_feedback


@pytest.mark.parametrize("kw, match", [
    (dict(span=0), "span >= 1"),
    (dict(grouping="sliding"), "grouping must be one of"),
    (dict(link="B"), "link must be one of"),
    (dict(grouping="chunked", schedule="alternate"), "chunk_alternate"),
    (dict(chunk_alternate=True), "schedule 'alternate'"),
])
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        Routing(depth=4, **kw)


def test_from_config_resolves_span_and_link():
    import os
    from chipsim.config import load_config
    path = os.path.join(os.path.dirname(__file__), "..", "hwconfigs", "44core_4bit.yaml")

    def routing(*sets):
        return Routing.from_config(load_config(path, list(sets)).hw, 4)
    assert routing("workload.rule=df") == Routing(depth=4, span=1)
    assert routing("workload.rule=cwc") == Routing(depth=4, span=1)
    assert routing("workload.rule=df-o") == Routing(depth=4, span=2)
    assert routing("workload.rule=df-r", "learning.span=3") == Routing(depth=4, span=3, link="feedback")
    assert routing("workload.rule=df-o", "learning.olu_schedule=alternate") == \
        Routing(depth=4, span=2, schedule="alternate")
    assert routing("workload.rule=df-r", "learning.grouping=chunked", "learning.chunk_alternate=true") == \
        Routing(depth=4, span=2, grouping="chunked", chunk_alternate=True, link="feedback")
    assert routing("workload.rule=cwc", "learning.strategy=df-o", "learning.span=2",
                   "learning.grouping=chunked") == Routing(depth=4, span=2, grouping="chunked")
