"""Pure parts of the semantic cache: categorizer, guard, request rules, entry value."""
