"""Internals of :mod:`sandbox.policy`, one concern per module."""
