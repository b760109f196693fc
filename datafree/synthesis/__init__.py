"""Data-free synthesizers, one module per method (METHODS.md §3.4, §4, §5); registered in ``registry.METHODS``."""
