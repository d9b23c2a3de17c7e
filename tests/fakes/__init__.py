"""Test doubles: a fake LLM server speaking the OpenAI and Anthropic wire formats."""
