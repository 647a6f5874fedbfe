"""The drafter that finds where an answer re-joins its prediction."""

from gpu_worker.reference_drafts import FIRST_DRAFT_TOKENS, ReferenceDrafter


def rejoining(reference: list[int]) -> ReferenceDrafter:
    """A drafter whose first draft was rejected at once: the next one comes from matching."""
    d = ReferenceDrafter(reference)
    d.checked(len(d.propose([], 1)), 0)
    return d


def test_drafts_follow_the_reference_and_double_while_kept_whole():
    ref = list(range(100, 160))
    d = ReferenceDrafter(ref)
    assert d.propose([], 100) == ref[:FIRST_DRAFT_TOKENS]
    d.checked(FIRST_DRAFT_TOKENS, FIRST_DRAFT_TOKENS)
    # The model's token after the draft was the reference's next: go on after it, twice as long.
    assert d.propose(ref[:9], 100) == ref[9:25]
    d.checked(16, 16)
    assert d.propose(ref[:26], 5) == ref[26:31]  # cut to what the answer can still hold
    d.checked(5, 2)  # rejected: back to the first length, and to matching
    assert d.limit == FIRST_DRAFT_TOKENS
    assert d.propose([999, 998], 100) == []
    assert d.propose([999, 130, 131], 100) == ref[32:40]


def test_a_kept_draft_followed_by_another_token_goes_back_to_matching():
    ref = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    d = ReferenceDrafter(ref)
    d.checked(len(d.propose([], 3)), 3)  # [1, 2, 3] kept; the model then wrote 50, not 4
    assert d.propose([1, 2, 3, 50], 100) == []
    assert d.propose([1, 2, 3, 50, 5, 6], 100) == [7, 8, 9, 10, 11, 12]


def test_the_continuation_after_a_two_token_match():
    d = rejoining([1, 2, 3, 4, 5, 6])
    assert d.propose([9, 9, 3, 4], max_tokens=10) == [5, 6]
    assert d.propose([9, 4], max_tokens=10) == []  # one common token is not a match
    assert d.propose([5, 6], max_tokens=10) == []  # the reference ends there
    assert d.propose([1, 2], max_tokens=1) == [3]
    assert d.propose([2], max_tokens=10) == []


def test_the_longest_match_wins():
    # "7 8" occurs twice; the answer's tail "1 7 8" matches the second one for longer.
    ref = [0, 7, 8, 10, 11, 1, 7, 8, 20, 21]
    assert rejoining(ref).propose([5, 1, 7, 8], max_tokens=10) == [20, 21]
    assert rejoining(ref).propose([5, 0, 7, 8], max_tokens=10) == [10, 11, 1, 7, 8, 20, 21]


def test_equal_matches_walk_forwards():
    # A repeated phrase: after drafting past the first one, the next draft comes from the second.
    ref = [3, 4, 5, 6, 3, 4, 9, 9, 9, 9, 9]
    d = rejoining(ref)
    assert d.propose([3, 4], max_tokens=2) == [5, 6]
    d.checked(2, 1)
    assert d.propose([3, 4], max_tokens=10) == [9, 9, 9, 9, 9]
    assert rejoining(ref).propose([3, 4], max_tokens=10) == [5, 6, 3, 4, 9, 9, 9, 9]


def test_a_repetitive_reference_is_matched_in_bounded_work():
    ref = [7] * 200_000 + [1, 2, 3]
    d = rejoining(ref)
    assert d.propose([7] * 50_000, max_tokens=4) == [7, 7, 7, 7]  # instant, not 10**10 steps
    assert rejoining(ref).propose([5, 7, 7], max_tokens=4) == [7, 7, 7, 7]
