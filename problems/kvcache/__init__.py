"""Suite kvcache."""
