"""The base of every config struct: frozen, keyword-only, unknown keys rejected.

A typo in YAML (`routng:`) must fail at start-up with the path to it, never be ignored, so every
struct in config/ derives from `Frozen`. Policy choices derive from `Tagged`: a tagged union keyed
by `type`, so `routing: {type: lmetric}` picks the member and a new policy is one more class.
"""

from __future__ import annotations

import msgspec


class Frozen(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of all config structs."""


class Tagged(Frozen, tag_field="type"):
    """Base of the members of a policy union; subclasses set `tag="name"`."""
