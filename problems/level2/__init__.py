"""Suite level2."""
