import pytest

from gateway.prefix_index import EventPrefixIndex, RoutedPrefixIndex


def test_event_index_needs_a_snapshot_first():
    idx = EventPrefixIndex()
    assert not idx.apply(1, [1, 2], [])
    assert idx.match([1, 2]) == 0
    assert idx.apply(5, [1, 2, 3], [], snapshot=True)
    assert idx.match([1, 2, 9, 3]) == 2


@pytest.mark.parametrize(
    "batches, query, expected",
    [
        ([(6, [4], [])], [1, 2, 3, 4], 4),
        ([(6, [], [2])], [1, 2, 3], 1),
        ([(6, [4], []), (7, [], [1])], [1, 2, 3, 4], 0),
    ],
)
def test_event_index_applies_consecutive_batches(batches, query, expected):
    idx = EventPrefixIndex()
    idx.apply(5, [1, 2, 3], [], snapshot=True)
    for seq, stored, removed in batches:
        assert idx.apply(seq, stored, removed)
    assert idx.match(query) == expected


def test_event_gap_is_reported_and_reset_clears():
    idx = EventPrefixIndex()
    idx.apply(5, [1, 2], [], snapshot=True)
    assert not idx.apply(7, [3], [])
    idx.reset()
    assert not idx.synced and idx.match([1]) == 0
    assert idx.apply(9, [1, 2, 3], [], snapshot=True) and idx.match([1, 2, 3]) == 3


def test_event_index_bounded():
    idx = EventPrefixIndex(max_hashes=3)
    assert not idx.apply(1, [1, 2, 3, 4], [], snapshot=True)
    assert len(idx) == 0


def test_routed_index_expires_and_is_bounded():
    idx = RoutedPrefixIndex(max_hashes=4, ttl_s=10)
    idx.record([1, 2, 3], now=0)
    assert idx.match([1, 2, 3, 4], now=5) == 3
    idx.record([1, 7, 8], now=6)  # 2 and 3 are now the oldest; the bound drops 2
    assert len(idx) == 4 and idx.match([1, 2, 3], now=6) == 1
    assert idx.match([1, 7, 8], now=20) == 0
