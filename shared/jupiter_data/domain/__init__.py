"""Pure rules and models: no I/O, no imports from services or adapters."""
