"""Benchmarks: `python -m bench` runs them all, `python -m bench.<name>` one of them.

They print measured figures; nothing here asserts a timing.
"""
