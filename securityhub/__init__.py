"""The Security Hub layer: normalized findings, ASFF building, correlation and the gateway.

This package also owns the small plumbing every part of containerscan shares (errors,
logging, AWS sessions), because both `check` and `sidecar` depend on it and it depends on
neither.
"""
