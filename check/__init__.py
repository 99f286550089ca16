"""The check: the bulk ECR sweep, its scanners, cache, outputs and launchers."""
