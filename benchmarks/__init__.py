"""Aether benchmarks: each measures Aether and a raw baseline in the same run (``make bench``)."""
