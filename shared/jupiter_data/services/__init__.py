"""Use cases. Each takes its ports as arguments; the entry points get them from ``bootstrap``."""
