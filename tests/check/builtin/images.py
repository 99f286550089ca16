"""Build real image artifacts for the tests: tar layers, OCI layouts, docker-save archives.

The builders live in `check.quickstart.sampleimages` (the local quick start builds its images with
them too); this module keeps the tests' import path.
"""

from __future__ import annotations

from check.quickstart.sampleimages import (
    LAYER_GZIP,
    LAYER_TAR,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blobs,
    Layer,
    build_blobs,
    sha256,
    write_blob,
    write_docker_archive,
    write_oci_layout,
)

__all__ = [
    "LAYER_GZIP", "LAYER_TAR", "OCI_CONFIG", "OCI_INDEX", "OCI_MANIFEST", "Blobs", "Layer",
    "build_blobs", "sha256", "write_blob", "write_docker_archive", "write_oci_layout",
]
