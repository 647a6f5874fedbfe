"""Pure decisions: no I/O, no torch, no clock of their own (callers pass `now`)."""
