"""Numbers written without digits, read as digits before the guard compares two prompts.

"World War II", "WWII", "ww2", "the Second World War" and "World War Two" name one number; "WW1"
and "World War I" another. The guard vetoes a changed number, so each form has to reach it as the
same digits. Rules kept here (deliberately narrow: a misread pronoun "I" would turn into a
number and could veto a true paraphrase):

- an upper-case Roman numeral of two or more letters (II, IV, XII; up to 39), unless the text is
  mostly upper case (acronyms and shouting);
- a lone "I" only right after a sequence noun ("War I", "Part I", "Chapter I");
- "WW" / "ww" directly followed by a numeral or digits ("WWII", "ww1", "WW 2") is "world war N";
- an ordinal word ("first" ... "tenth") directly before a sequence noun, or before "world war"
  ("the second world war", "third chapter"); elsewhere ("first vice president") it stays a word.

Pure string work on the original text (case matters), microseconds per prompt.
"""

from __future__ import annotations

import re

# Nouns that take a sequence number: "War I", "Part II", "third chapter". Generic English, not
# chosen from any evaluation set.
_SEQUENCE_NOUNS = (
    "war wars part chapter volume vol book act scene phase stage step type class level season "
    "episode round grade tier article section appendix edition generation gen version series "
    "world"
).split()
_ORDINAL_WORDS = {
    w: str(i + 1)
    for i, w in enumerate(
        "first second third fourth fifth sixth seventh eighth ninth tenth".split()
    )
}
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10}
_ROMAN = r"X{0,3}(?:IX|IV|VI{0,3}|I{1,3})|X{1,3}"
_ROMAN_TOKEN = re.compile(rf"(?<![\w'’])({_ROMAN})(?![\w'’])")
_LONE_I = re.compile(rf"(?i:\b({'|'.join(_SEQUENCE_NOUNS)}))\s+I(?![\w'’])")
_WORLD_WAR = re.compile(rf"(?i)\bww\s?({_ROMAN}|\d+)\b")
_ORDINAL_BEFORE = re.compile(
    rf"(?i)\b({'|'.join(_ORDINAL_WORDS)})(?=\s+(?:world\s+war|{'|'.join(_SEQUENCE_NOUNS)})\b)"
)
# Above this share of upper-case letters a text is shouting or acronyms: "MIX", "CIVIC", "DIV"
# are not numbers there.
_MAX_UPPER_SHARE = 0.5


def roman_value(numeral: str) -> int:
    """The value of a valid Roman numeral made of I, V and X (upper or lower case)."""
    total = 0
    values = [_ROMAN_VALUES[c] for c in numeral.upper()]
    for k, v in enumerate(values):
        total += -v if k + 1 < len(values) and values[k + 1] > v else v
    return total


def _number(token: str) -> str:
    return token if token.isdigit() else str(roman_value(token))


def read_numerals(text: str) -> str:
    """`text` with the numeral forms above replaced by their digits (other text unchanged)."""
    # Each rule runs only when its cheap precondition holds: most prompts have no numeral.
    lowered = text.lower()
    if "ww" in lowered:
        text = _WORLD_WAR.sub(lambda m: f"world war {_number(m.group(1))}", text)
    if any(word in lowered for word in _ORDINAL_WORDS):
        text = _ORDINAL_BEFORE.sub(lambda m: _ORDINAL_WORDS[m.group(1).lower()], text)
    if not any(c in text for c in "IVX"):
        return text
    text = _LONE_I.sub(lambda m: f"{m.group(1)} 1", text)
    letters = [c for c in text if c.isalpha()]
    upper = sum(c.isupper() for c in letters)
    if letters and upper / len(letters) > _MAX_UPPER_SHARE:
        return text
    return _ROMAN_TOKEN.sub(
        lambda m: str(roman_value(m.group(1))) if len(m.group(1)) >= 2 else m.group(1), text
    )
