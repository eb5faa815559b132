"""Shared fixtures: the aether.testing plugin is loaded via pytest addopts."""
