"""Contrast checks (policies/semantic/contrast_checks.py): each one vetoes its kind of sibling
question and lets paraphrases of one question through. Prompts written for this test."""

from __future__ import annotations

import typing

import msgspec
import pytest

from config.loader import ConfigError, build
from config.semantic import (
    DEFAULT_CONTRAST_CHECKS,
    ContrastCheck,
    GuardConfig,
    SemanticCacheConfig,
)
from gateway.semantic.cache import CachedReply, CacheQuery, build_guard
from policies.semantic.contrast_checks import CHECKS, sort_order
from policies.semantic.guard import Guard
from policies.semantic.operators import arithmetic_operators as operators
from policies.semantic.pair_features import prompt_terms

# (check, prompt, prompt): the check must call them different questions.
DIFFERENT = [
    ("operator", "Solve 5y - 4 = 21", "solve 5y+4=21"),
    ("operator", "what is 12 plus 30", "12 minus 30?"),
    ("operator", "simplify 6a * 2", "simplify 6a / 2"),
    (
        "negated_word",
        "list the users who have not logged in this month",
        "users logged in this month",
    ),
    (
        "negated_word",
        "python: how to tell that a directory is not empty",
        "check if directory empty python",
    ),
    (
        "negated_word",
        "countries with no coastline in Europe",
        "European countries that have a coastline",
    ),
    ("direction", "turn a yaml file into json", "convert json to yaml"),
    ("direction", "How do I go from a Python list to a numpy array?", "numpy array to list"),
    ("direction", "change a str into bytes in Python 3", "python bytes to string"),
    ("direction", "How many feet are in 3 meters?", "convert 3 ft to meters"),
    ("direction", "inches to centimetres", "How do I convert centimeters into inches?"),
    ("direction_signs", "jet lag flying Boston → Tokyo", "tips for jet lag going Tokyo to Boston"),
    ("direction_signs", "moving boston -> denver, what to pack", "moving from denver to boston"),
    ("operator_class", "what does == do in ruby", "what does === do in ruby"),
    ("operator_class", "simplify 3⁴ · 3² as one power", "simplify 3⁴ / 3² as one power"),
    ("time_frame", "Is it going to rain in Oslo tomorrow?", "oslo rain right now"),
    ("time_frame", "what was the score of the Celtics game yesterday", "celtics score today"),
    ("sort_order", "sort a dict by value", "sort a dict by value from largest to smallest"),
    ("sort_order", "order rows by date, newest first", "sql order rows by date ascending"),
    ("sort_order", "sort names in reverse order in java", "java sort names"),
    ("reversing_prefix", "how to install nodejs on ubuntu", "how to uninstall nodejs on ubuntu"),
    ("reversing_prefix", "is 0 a valid value here", "is 0 a nonvalid value here"),
    ("antonym", "Which team won the 2010 World Cup final?", "Who lost the 2010 World Cup final?"),
    ("antonym", "how to encrypt a file with gpg", "gpg decrypt a file"),
    (
        "antonym_added",
        "align text vertically in a table cell",
        "align text horizontally and vertically in a table cell",
    ),
    (
        "swapped_words",
        "In chess, can a bishop capture a knight that protects a rook?",
        "In chess, can a rook capture a knight that protects a bishop?",
    ),
    (
        "swapped_words",
        "Does the wife of the king outrank the mother of the king?",
        "does the mother of the king outrank the wife of the king",
    ),
    ("number_roles", "What is 15 percent of 60?", "60 is what percent of 15?"),
    ("number_roles", "divide 12 by 4", "what do you get when 4 is divided by 12"),
    ("grouping", "compute 10 - 4 - 3", "compute 10 - (4 - 3)"),
    ("opposite_pole", "which ocean is the deepest", "what is the shallowest ocean"),
    ("opposite_pole", "fastest land animal", "which land animal is the slowest"),
    ("opposite_pole", "which element is the least dense", "densest element"),
    (
        "opposite_pole",
        "Who ruled England before Henry VIII?",
        "which English king followed Henry VIII",
    ),
    ("letter_swapped", "What foods are high in vitamin C?", "What foods are high in vitamin K?"),
    ("letter_swapped", "solve 3x + 2y = 12 for x", "solve 3x + 2y = 12 for y"),
    ("negated_word", "ideas for a party theme, nothing scary", "scary party theme ideas"),
    ("operator_class", "torch: what does x @ w compute", "torch: what does x * w compute"),
    ("operator_class", "what is 3/4 multiplied by 2/5", "(3/4) / (2/5) = ?"),
    ("operator_class", "rust: is 10 in 0..10", "rust: is 10 in 0..=10"),
    ("operator_class", "(2 + 3i)(4 - i) = ?", "(2 + 3i) + (4 - i) = ?"),
    (
        "logic_changed",
        "sql: rows where age > 30 and salary < 5000",
        "sql rows with age>30 or salary<5000",
    ),
    ("logic_changed", "filter where x > 0 && y > 0", "filter where x > 0 || y > 0"),
    ("negated_word", "dairy-free dessert ideas", "dessert ideas with lots of dairy"),
    (
        "negated_word",
        "count the integers from 1 to 50 that are not prime",
        "how many primes up to 50",
    ),
    ("antonym", "how to create a branch in git", "git delete a branch"),
    ("grouping", "what is (6 + 2) * 5", "6 + 2 * 5 = ?"),
]

# (prompt, prompt): one question, which no check may veto.
SAME = [
    ("Solve 5y - 4 = 21", "solve for y: 5y-4=21"),
    ("what is 12 plus 30", "12 + 30 = ?"),
    ("comma-separated values to a list", "turn a comma separated string into a list"),
    ("I can't sleep at night, what helps?", "how to fall asleep faster at night"),
    ("check if directory empty python", "python test whether a folder is empty"),
    ("turn a yaml file into json", "yaml to json converter in python"),
    ("How many feet are in 3 meters?", "3 m in ft"),
    ("How do I convert a String to an int in Java?", "java str to integer"),
    ("oslo rain right now", "Is it raining in Oslo at the moment? currently"),
    ("sort a dict by value", "sort a dictionary by its values in ascending order"),
    ("sort names in reverse order in java", "java sort names descending"),
    ("how to install nodejs on ubuntu", "installing node js on ubuntu linux"),
    ("Which team won the 2010 World Cup final?", "2010 world cup winner"),
    (
        "align text horizontally and vertically in a table cell",
        "center text both ways in a table cell",
    ),
    ("weather in Rome this weekend", "Rome weekend forecast"),
    ("jet lag flying Boston → Tokyo", "how to beat jet lag on a Boston to Tokyo flight"),
    ("moving boston -> denver, what to pack", "what to pack when moving from boston to denver"),
    ("words of 16-year-old's birthday card", "birthday card message for a 16 year old"),
    ("compare cats and dogs as pets", "compare dogs and cats as pets"),
    ("What is 15 percent of 60?", "15% of 60 = ?"),
    ("compute 10 - 4 - 3", "10 minus 4 minus 3"),
    ("what is 7 * 8 + 1", "7 × 8 + 1 = ?"),
    ("what is (6 + 2) * 5", "(6+2) × 5 = ?"),
    ("How long does it take to boil an egg?", "boiling an egg: how many minutes"),
    ("How tall is the Eiffel Tower?", "Eiffel Tower height"),
    ("cheapest flight to Rome", "least expensive flight to Rome"),
    ("What is the largest country by area?", "biggest country in the world by size"),
    ("solve for x: 2x + 3 = 7", "2x + 3 = 7, find x"),
    ("send an email to bob@example.com from python", "python: email bob@example.com"),
    ("what is 6 multiplied by 7", "6 times 7"),
    ("gluten free brownie recipe", "recipe for gluten-free brownies"),
    ("linux free up port 8080", "kill whatever is using port 8080 on linux"),
    ("squares of the even numbers between 1 and 20", "squares of even numbers in 1..20"),
    ("rows where a > 1 and b > 2", "rows with a > 1 & b > 2"),
]


def tokens(text: str) -> tuple[str, ...]:
    return prompt_terms(text).tokens


@pytest.mark.parametrize(("name", "a", "b"), DIFFERENT)
def test_each_check_vetoes_its_kind_of_sibling_in_both_orders(name: str, a: str, b: str) -> None:
    check = CHECKS[name]
    assert check(tokens(a), tokens(b)) and check(tokens(b), tokens(a))


@pytest.mark.parametrize(("a", "b"), SAME)
def test_no_check_vetoes_a_paraphrase(a: str, b: str) -> None:
    vetoing = [
        n
        for n, check in CHECKS.items()
        if check(tokens(a), tokens(b)) or check(tokens(b), tokens(a))
    ]
    assert vetoing == []


def test_operators_need_operands_around_a_symbol() -> None:
    assert operators(tokens("3x-7 = 22")) == {"-"}
    assert operators(tokens("x + 1")) == {"+"}
    # A hyphen between words or before a word, and C++'s pluses, are not operators.
    assert operators(tokens("comma-separated 16-year-old list in C++")) == set()


def test_a_sort_without_an_order_reads_ascending() -> None:
    assert sort_order(tokens("sort the list")) == "asc"
    assert sort_order(tokens("sort the list, highest first")) == "desc"
    assert sort_order(tokens("reverse a string")) == ""  # no sort: the check stays out


def test_the_guard_vetoes_with_its_configured_checks_only() -> None:
    a, b = prompt_terms("Is it going to rain in Oslo tomorrow?"), prompt_terms("oslo rain now")
    # `rules` mode accepts whatever it does not veto, so the check alone decides here.
    assert Guard("rules").probability(0.9, a, b) == 1.0
    assert Guard("rules", contrast_checks=("time_frame",)).probability(0.9, a, b) == 0.0
    assert Guard("rules", contrast_checks=("operator",)).probability(0.9, a, b) == 1.0
    # `off` means similarity alone: no veto of any kind.
    assert Guard("off", contrast_checks=tuple(CHECKS)).probability(0.9, a, b) == 1.0
    with pytest.raises(ValueError, match="unknown contrast checks"):
        Guard("rules", contrast_checks=("directoin",))


def test_config_names_every_check_and_rejects_a_typo() -> None:
    assert set(typing.get_args(ContrastCheck)) == set(CHECKS)
    cfg = build({"guard": {"contrast_checks": ["direction", "operator"]}}, SemanticCacheConfig)
    assert cfg.guard.contrast_checks == ("direction", "operator")
    with pytest.raises(ConfigError, match="contrast_checks"):
        build({"guard": {"contrast_checks": ["directoin"]}}, SemanticCacheConfig)
    rules = msgspec.structs.replace(
        SemanticCacheConfig(), guard=GuardConfig(mode="rules", contrast_checks=("time_frame",))
    )
    guard = build_guard(rules)
    assert [check.__name__ for check in guard.contrast_checks] == ["time_frame_changed"]


def q(text: str) -> CacheQuery:
    return CacheQuery(tenant="t", model="m", text=text, temperature=0.0, category_header="math")


async def test_the_default_cache_misses_siblings_the_guard_without_checks_serves(
    make_cache, small_cfg
):
    base = small_cfg()
    assert base.guard.contrast_checks == DEFAULT_CONTRAST_CHECKS  # on since session 5
    # Since session 6 the wider readings replace the session-5 operator and direction checks.
    assert set(typing.get_args(ContrastCheck)) - set(DEFAULT_CONTRAST_CHECKS) == {
        "operator",
        "direction",
        "swapped_words",
    }
    off = msgspec.structs.replace(
        base, guard=msgspec.structs.replace(base.guard, contrast_checks=())
    )
    stored = "Solve 5y - 4 = 21"
    siblings = ("solve 5y+4=21", "Solve 5y + 4 = 21")
    served = {}
    for name, cfg in (("off", off), ("default", base)):
        cache = await make_cache(cfg)
        try:
            first = await cache.lookup(q(stored))
            assert await cache.insert(first, CachedReply(text="y = 5"))
            served[name] = [(await cache.lookup(q(s))).status for s in siblings]
            # A paraphrase of the stored question is still served.
            assert (await cache.lookup(q("solve for y: 5y-4=21"))).status == "hit"
        finally:
            await cache.close()
    assert "hit" in served["off"]  # what the checks are for: the old guard served a sibling
    assert served["default"] == ["miss", "miss"]
