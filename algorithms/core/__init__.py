"""The shared core every algorithm builds on: contract, registry, nets, data, normalization."""
