"""Uplinks: the World's changes to the systems a plant already runs (docs/uplinks.md)."""
