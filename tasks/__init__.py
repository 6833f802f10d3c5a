"""Tasks: the registry, Minari dataset loading and building, environments."""
