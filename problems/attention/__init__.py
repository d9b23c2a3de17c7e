"""Suite attention."""
