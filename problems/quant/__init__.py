"""Suite quant."""
