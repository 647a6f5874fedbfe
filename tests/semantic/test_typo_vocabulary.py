"""guard.typo_vocabulary: two real words are never folded as a typo of each other."""

from __future__ import annotations

import msgspec

from gateway.semantic.cache import build_semantic_cache
from policies.semantic.pair_features import edit_of, prompt_terms


def edit(a: str, b: str, known: frozenset[str]) -> tuple[tuple[str, str], ...]:
    return edit_of(prompt_terms(a), prompt_terms(b), known).replaced


def test_known_words_are_not_folded_but_misspellings_and_inflections_are(st_model):
    known = st_model.whole_words()
    assert {"remote", "remove", "austria", "australia", "python"} <= known
    assert "pyhton" not in known and not any(w.startswith("##") for w in known)
    # Without a vocabulary any close spelling folds: another entity reads as the same word.
    assert edit("capital of austria", "capital of australia", frozenset()) == ()
    assert edit("capital of austria", "capital of australia", known) == (("austria", "australia"),)
    assert edit("git delete remote branch", "git delete remove branch", known) != ()
    # A misspelling (not a whole vocabulary word) and an inflection still fold.
    assert edit("reverse a string in pyhton", "reverse a string in python", known) == ()
    assert edit("sort the strings of a column", "sort the string of a column", known) == ()


async def test_cache_passes_the_vocabulary_to_the_guard_only_when_configured(st_model, small_cfg):
    base = small_cfg()
    assert base.guard.typo_vocabulary  # on by default since session 4
    off = msgspec.structs.replace(
        base, guard=msgspec.structs.replace(base.guard, typo_vocabulary=False)
    )
    assert "australia" in build_semantic_cache(base, model=st_model).guard.known_words
    assert build_semantic_cache(off, model=st_model).guard.known_words == frozenset()
