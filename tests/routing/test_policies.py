"""Every registered routing policy: the shared contract, then each policy's choices on hand-made
fleets (table-driven)."""

from __future__ import annotations

import typing
from collections import Counter

import msgspec
import pytest

from config.loader import ConfigError, build
from config.routing import DEFAULT_ROUTING, LMetricRouting, RoutingConfig
from policies.routing import REGISTRY, RequestView, WorkerView, build_routing

ALL = sorted(REGISTRY)


def _cfg(name: str, **fields: object) -> RoutingConfig:
    return msgspec.convert({"type": name, **fields}, RoutingConfig)


def _w(i: int, **fields: int) -> WorkerView:
    return WorkerView(worker_id=f"w{i}", **fields)


REQ = RequestView(num_prompt_tokens=1000, block_size=16, num_blocks=62)


def test_registry_and_config_union_name_the_same_policies():
    tags = {m.__struct_config__.tag for m in typing.get_args(RoutingConfig)}
    assert tags == set(REGISTRY)


def test_default_is_lmetric():
    assert isinstance(DEFAULT_ROUTING, LMetricRouting)
    assert build_routing().name == "lmetric"


def test_bad_routing_yaml_fails_with_its_path():
    class Root(msgspec.Struct, forbid_unknown_fields=True):
        routing: RoutingConfig = DEFAULT_ROUTING

    assert build({"routing": {"type": "weighted", "prefix_weight": 1}}, Root).routing == _cfg(
        "weighted", prefix_weight=1.0
    )
    with pytest.raises(ConfigError, match="routing"):
        build({"routing": {"type": "lmetric", "count_incomming": True}}, Root)
    with pytest.raises(ConfigError, match="routing"):
        build({"routing": {"type": "weighted", "queue_weight": -1}}, Root)


@pytest.mark.parametrize("name", ALL)
def test_one_worker_gets_everything(name):
    policy = build_routing(_cfg(name))
    assert all(policy.select(REQ, [_w(0, running=3)], float(t)) == 0 for t in range(5))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("fleet", [3, 4, 8])
def test_ties_spread_evenly_never_pile_on_worker_0(name, fleet):
    policy = build_routing(_cfg(name))
    workers = [
        _w(i, matched_blocks=2, running=1, free_blocks=10, total_blocks=20) for i in range(fleet)
    ]
    picks = Counter(policy.select(REQ, workers, float(t)) for t in range(fleet * 5))
    assert picks == {i: 5 for i in range(fleet)}


@pytest.mark.parametrize("name", ALL)
def test_ties_among_a_subset_rotate_within_it(name):
    """Workers 1 and 3 are equally good and better than 0 and 2 (by every policy's measure)."""
    policy = build_routing(_cfg(name))
    good = dict(matched_blocks=60, free_blocks=20, total_blocks=20)
    bad = dict(
        matched_blocks=0, running=30, queued_prefill_tokens=5000, free_blocks=0, total_blocks=20
    )
    workers = [_w(0, **bad), _w(1, **good), _w(2, **bad), _w(3, **good)]
    picks = Counter(policy.select(REQ, workers, float(t)) for t in range(8))
    if name == "round_robin":  # blind by design
        assert picks == {0: 2, 1: 2, 2: 2, 3: 2}
    else:
        assert picks == {1: 4, 3: 4}


@pytest.mark.parametrize("name", ALL)
def test_same_inputs_same_choices(name):
    views = [
        _w(i, matched_blocks=i, running=(3 * i) % 5, queued_prefill_tokens=100 * i)
        for i in range(5)
    ]
    a, b = build_routing(_cfg(name)), build_routing(_cfg(name))
    assert [a.select(REQ, views, t) for t in range(10)] == [
        b.select(REQ, views, t) for t in range(10)
    ]


# (policy config, workers, expected index, why)
CASES = [
    (
        {"type": "lmetric"},
        [_w(0, running=4, matched_blocks=62), _w(1)],
        0,
        "busy worker holding the prefix (8 new tokens × 5) beats an idle miss (1000 × 1)",
    ),
    (
        {"type": "lmetric", "count_incoming": False},
        [_w(0, running=4, matched_blocks=62), _w(1)],
        1,
        "without +1 the idle worker scores 0 whatever it must recompute",
    ),
    (
        {"type": "lmetric"},
        [_w(0, running=8, matched_blocks=62, queued_prefill_tokens=5000), _w(1)],
        1,
        "a hot holder with a deep prefill queue loses to an idle worker",
    ),
    (
        {"type": "lmetric"},
        [_w(0, running=2, queued_prefill_tokens=3000), _w(1, running=2)],
        1,
        "queued prefill work counts",
    ),
    (
        # Product: holder (500 + 8) × 7 = 3556 > (0 + 1000) × 3 = 3000, so it picks w1; but at
        # the holder the first token comes sooner (508 ≤ 1000 prefill tokens to wait for) and
        # the requests in hand are stalled less (8 × 6 ≤ 1000 × 2): the holder keeps it.
        {"type": "lmetric"},
        [_w(0, running=6, matched_blocks=62, queued_prefill_tokens=500), _w(1, running=2)],
        0,
        "a holder where the request waits less and stalls less keeps it over the product's pick",
    ),
    (
        # Same first-token test passed (208 ≤ 1000), but the idle worker stalls nobody while the
        # holder would stall its 10 requests: the product's pick (the idle worker) stands.
        {"type": "lmetric"},
        [_w(0, running=10, matched_blocks=62, queued_prefill_tokens=200), _w(1)],
        1,
        "a holder that would stall its batch does not take over from an idle worker",
    ),
    (
        # The holder's queue (1200 + 8) is longer than the whole prompt elsewhere (1000): moving
        # gives the earlier first token, so the product's pick stands.
        {"type": "lmetric"},
        [_w(0, running=6, matched_blocks=62, queued_prefill_tokens=1200), _w(1, running=2)],
        1,
        "a holder whose queue is longer than the whole prompt elsewhere does not keep it",
    ),
    (
        {"type": "lmetric"},
        [_w(0, running=1, matched_blocks=10), _w(1, running=3, matched_blocks=50)],
        1,
        "(1000-160)×2=1680 vs (1000-800)×4=800",
    ),
    (
        {"type": "prefix"},
        [_w(0, running=50, matched_blocks=10), _w(1, matched_blocks=3)],
        0,
        "longest match wins whatever the load",
    ),
    (
        {"type": "prefix"},
        [_w(0, running=5, matched_blocks=3), _w(1, running=1, matched_blocks=3), _w(2)],
        1,
        "equal matches: least loaded",
    ),
    (
        {"type": "least_load"},
        [_w(0, running=3), _w(1, running=1, waiting=1), _w(2, in_flight=1)],
        2,
        "fewest in hand",
    ),
    (
        {"type": "weighted"},
        [_w(0, running=10, matched_blocks=62), _w(1)],
        0,
        "prefix 3×1.0 beats queue 2×1.0",
    ),
    (
        {"type": "weighted"},
        [_w(0, running=10, matched_blocks=31), _w(1)],
        1,
        "prefix 3×0.5 loses to queue 2×1.0",
    ),
    (
        {"type": "weighted", "prefix_weight": 1.0, "queue_weight": 0.0},
        [_w(0, running=10, matched_blocks=31), _w(1)],
        0,
        "weights come from config",
    ),
    (
        {"type": "weighted"},
        [_w(0, free_blocks=2, total_blocks=10), _w(1, free_blocks=9, total_blocks=10)],
        1,
        "free KV counts",
    ),
    (
        {"type": "cache_aware"},
        [_w(0, running=100, matched_blocks=62), _w(1, running=10)],
        1,
        "imbalanced (100-10 > 64 and 100 > 1.5×10): least loaded, locality ignored",
    ),
    (
        {"type": "cache_aware"},
        [_w(0, running=60, matched_blocks=62), _w(1, running=10)],
        0,
        "balanced enough (60-10 ≤ 64): longest match above the threshold",
    ),
    (
        {"type": "cache_aware"},
        [_w(0, matched_blocks=10, free_blocks=1), _w(1, free_blocks=5)],
        1,
        "best match 10/62 < 0.3: most free KV blocks",
    ),
]


@pytest.mark.parametrize(("cfg", "workers", "expected", "why"), CASES, ids=[c[3] for c in CASES])
def test_choice_on_hand_made_fleet(cfg, workers, expected, why):
    policy = build_routing(msgspec.convert(cfg, RoutingConfig))
    assert policy.select(REQ, workers, 0.0) == expected, why


def test_round_robin_cycles():
    policy = build_routing(_cfg("round_robin"))
    assert [policy.select(REQ, [_w(i) for i in range(3)], 0.0) for _ in range(7)] == [
        0,
        1,
        2,
        0,
        1,
        2,
        0,
    ]
