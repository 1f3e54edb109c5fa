"""Algorithms, each written only against unirl's neutral interfaces (no framework imports here)."""
