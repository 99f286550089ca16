"""The sidecar: a ptrace runtime monitor for Fargate tasks, driven by TracingPolicies."""
