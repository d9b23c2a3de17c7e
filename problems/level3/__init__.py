"""Suite level3."""
