"""Suite level1."""
