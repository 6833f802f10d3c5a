"""One file per algorithm; each registers itself with `algorithms.core.registry.register`."""
