"""The drafter that finds where an answer re-joins its prediction."""

from gpu_worker.reference_drafts import ReferenceDrafter


def test_the_continuation_after_a_two_token_match():
    d = ReferenceDrafter([1, 2, 3, 4, 5, 6])
    assert d.propose([9, 9, 3, 4], max_tokens=10) == [5, 6]
    assert d.propose([9, 4], max_tokens=10) == []  # one common token is not a match
    assert d.propose([5, 6], max_tokens=10) == []  # the reference ends there
    assert d.propose([1, 2], max_tokens=1) == [3]
    assert d.propose([2], max_tokens=10) == []


def test_the_longest_match_wins():
    # "7 8" occurs twice; the answer's tail "1 7 8" matches the second one for longer.
    d = ReferenceDrafter([0, 7, 8, 10, 11, 1, 7, 8, 20, 21])
    assert d.propose([5, 1, 7, 8], max_tokens=10) == [20, 21]
    assert d.propose([5, 0, 7, 8], max_tokens=10) == [10, 11, 1, 7, 8, 20, 21]


def test_equal_matches_walk_forwards():
    # A repeated phrase: after drafting past the first one, the next draft comes from the second.
    d = ReferenceDrafter([3, 4, 5, 6, 3, 4, 9, 9])
    assert d.propose([3, 4], max_tokens=2) == [5, 6]
    assert d.propose([3, 4], max_tokens=10) == [9, 9]
    fresh = ReferenceDrafter([3, 4, 5, 6, 3, 4, 9, 9])
    assert fresh.propose([3, 4], max_tokens=10) == [5, 6, 3, 4, 9, 9]
