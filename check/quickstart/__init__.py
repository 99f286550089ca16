"""The local quick start: the demo, its local environment and its sample images."""
