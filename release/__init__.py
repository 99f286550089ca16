"""The release tools, run from a checkout: build, push and promote the images (`imagebuild`).

Beside `docker/` rather than inside the `check` package: the check's runtime never needs
them, and they are not installed with it. (Not named `docker`: that would shadow the
Docker SDK they use.)
"""
