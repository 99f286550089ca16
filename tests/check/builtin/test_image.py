"""Image access: OCI layouts and docker-save archives built here; hostile input refused."""

from __future__ import annotations

import gzip
import json
import sys
import tarfile
from pathlib import Path

import pytest

from check.builtin.image import (
    DockerArchiveSource,
    ImageLimits,
    OciLayoutSource,
    read_image,
)
from check.builtin.inventory import wants
from securityhub.errors import ImageError
from tests.check.builtin.images import Layer, build_blobs, sha256, write_blob, write_oci_layout

SITE = "usr/lib/python3/dist-packages"


def _meta(name: str, version: str) -> str:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nbody\n"


def _layout(tmp_path: Path, tars: list[bytes], compress: bool = True) -> OciLayoutSource:
    write_oci_layout(tmp_path / "img", [(build_blobs(tars, compress), "linux/amd64")])
    return OciLayoutSource(tmp_path / "img")


def test_whiteouts_delete_files_and_opaque_directories(tmp_path):
    lower = (Layer()
             .file(f"{SITE}/a-1.0.dist-info/METADATA", _meta("a", "1.0"))
             .file(f"{SITE}/b-1.0.dist-info/METADATA", _meta("b", "1.0"))
             .file("opt/app/node_modules/left/package.json", '{"name":"left","version":"1.0.0"}')
             .file("etc/os-release", "ID=debian\nVERSION_ID=12\n")
             .bytes())
    upper = (Layer()
             .whiteout(f"{SITE}/a-1.0.dist-info")
             .opaque("opt/app/node_modules")
             .file("opt/app/node_modules/right/package.json",
                   '{"name":"right","version":"2.0.0"}')
             .file(f"{SITE}/b-2.0.dist-info/METADATA", _meta("b", "2.0"))
             .bytes())
    files = read_image(_layout(tmp_path, [lower, upper]), wants)
    assert sorted(files.files) == [
        "etc/os-release",
        "opt/app/node_modules/right/package.json",
        f"{SITE}/b-1.0.dist-info/METADATA",
        f"{SITE}/b-2.0.dist-info/METADATA",
    ]
    layer_digests = files.layers
    assert files.files["opt/app/node_modules/right/package.json"][0] == layer_digests[1]
    assert files.files["etc/os-release"][0] == layer_digests[0]
    assert files.digest.startswith("sha256:")


def test_visitor_sees_small_files_of_every_layer_but_not_big_ones(tmp_path):
    seen = []
    tars = [Layer().file("a.txt", "x" * 10).file("big.txt", "y" * 5000).bytes(),
            Layer().whiteout("a.txt").bytes()]
    read_image(_layout(tmp_path, tars, compress=False), wants,
               lambda path, layer, data: seen.append((path, len(data))),
               ImageLimits(max_visited_file=4096))
    assert seen == [("a.txt", 10)]


def test_platform_is_selected_from_a_nested_index(tmp_path):
    amd = build_blobs([Layer().file("etc/os-release", "ID=debian\n").bytes()])
    arm = build_blobs([Layer().file("etc/os-release", "ID=alpine\n").bytes()],
                      architecture="arm64")
    write_oci_layout(tmp_path / "multi", [(amd, "linux/amd64"), (arm, "linux/arm64")],
                     index=True)
    files = read_image(OciLayoutSource(tmp_path / "multi", "linux/arm64"), wants)
    assert files.files["etc/os-release"][1] == b"ID=alpine\n"
    assert files.digest == arm.manifest_digest
    with pytest.raises(ImageError, match=r"no linux/s390x image .*linux/amd64, linux/arm64"):
        read_image(OciLayoutSource(tmp_path / "multi", "linux/s390x"), wants)


def test_docker_archive_is_read_in_place(tmp_path):
    from tests.check.builtin.images import write_docker_archive

    tars = [Layer().file("etc/os-release", "ID=debian\n").bytes(),
            Layer().file(f"{SITE}/x-1.dist-info/METADATA", _meta("x", "1")).bytes()]
    archive = write_docker_archive(tmp_path / "image.tar", tars)
    source = DockerArchiveSource(archive)
    try:
        files = read_image(source, wants)
    finally:
        source.close()
    assert files.layers == (sha256(tars[0]), sha256(tars[1]))
    assert files.files[f"{SITE}/x-1.dist-info/METADATA"][0] == sha256(tars[1])
    assert not list(tmp_path.glob("**/layer.tar"))  # nothing extracted beside the archive


# ------------------------------------------------------------------------------- hostile


def _expect_error(source, pattern: str, limits: ImageLimits | None = None):
    with pytest.raises(ImageError, match=pattern) as caught:
        read_image(source, wants, lambda *a: None, limits)
    return caught.value


def test_path_traversal_is_refused(tmp_path):
    buffer = Layer()
    buffer.file("../../etc/cron.d/evil", "* * * * * root sh\n")
    error = _expect_error(_layout(tmp_path, [buffer.bytes()]), r"climbs out of the image root")
    assert "../../etc/cron.d/evil" in error.message
    assert "layer 0 (sha256:" in error.message


def test_symlink_out_of_the_root_is_refused(tmp_path):
    tars = [Layer().symlink("usr/lib/escape", "../../../../etc/shadow").bytes()]
    _expect_error(_layout(tmp_path, tars), r"symlink 'usr/lib/escape' -> .* outside the image root")


def test_absolute_symlinks_stay_inside_the_root(tmp_path):
    tars = [Layer().symlink("etc/alternatives/python", "/usr/bin/python3.11").bytes()]
    files = read_image(_layout(tmp_path, tars), wants)
    assert files.entries == 1


def test_hard_link_out_of_the_root_is_refused(tmp_path):
    tars = [Layer().hardlink("etc/passwd2", "../etc/passwd").bytes()]
    _expect_error(_layout(tmp_path, tars), r"hard link .* outside the image root")


def test_huge_package_database_is_refused(tmp_path):
    tars = [Layer().file("var/lib/dpkg/status", "Package: x\n" * 2000).bytes()]
    error = _expect_error(_layout(tmp_path, tars), r"var/lib/dpkg/status is 22000 bytes, above",
                          ImageLimits(max_wanted_file=16 * 1024))
    assert error.remediation


def test_decompression_bomb_is_refused(tmp_path):
    tars = [Layer().file("zeros", b"\0" * 3_000_000).bytes()]
    _expect_error(_layout(tmp_path, tars), r"expands beyond the 1000000-byte cap",
                  ImageLimits(max_image_bytes=1_000_000))


def test_corrupt_layer_digest_is_refused(tmp_path):
    blobs = build_blobs([Layer().file("etc/os-release", "ID=debian\n").bytes()])
    root = write_oci_layout(tmp_path / "img", [(blobs, "linux/amd64")])
    layer_path = root / "blobs" / "sha256" / sha256(blobs.layers[0]).split(":")[1]
    tampered = gzip.compress(Layer().file("etc/os-release", "ID=evil\n").bytes())
    layer_path.write_bytes(tampered)
    _expect_error(OciLayoutSource(root), r"does not match its digest")


def test_truncated_layer_is_refused(tmp_path):
    blobs = build_blobs([Layer().file("etc/os-release", "ID=debian\n" * 5000).bytes()])
    root = write_oci_layout(tmp_path / "img", [(blobs, "linux/amd64")])
    layer_path = root / "blobs" / "sha256" / sha256(blobs.layers[0]).split(":")[1]
    layer_path.write_bytes(blobs.layers[0][: len(blobs.layers[0]) // 2])
    _expect_error(OciLayoutSource(root), r"layer 0 .* is corrupt or truncated")


def test_garbage_layer_is_refused(tmp_path):
    _expect_error(_layout(tmp_path, [b"this is not a tar archive at all" * 40], compress=False),
                  r"is corrupt or truncated")


def test_truncated_manifest_is_refused(tmp_path):
    blobs = build_blobs([Layer().file("a", "b").bytes()])
    root = write_oci_layout(tmp_path / "img", [(blobs, "linux/amd64")])
    index = (root / "index.json").read_text()
    (root / "index.json").write_text(index[: len(index) // 2])
    _expect_error(OciLayoutSource(root), r"index.json in oci-layout:.* is not valid JSON")


def test_manifest_not_matching_its_digest_is_refused(tmp_path):
    blobs = build_blobs([Layer().file("a", "b").bytes()])
    root = write_oci_layout(tmp_path / "img", [(blobs, "linux/amd64")])
    path = root / "blobs" / "sha256" / blobs.manifest_digest.split(":")[1]
    doc = json.loads(path.read_text())
    doc["layers"] = []
    path.write_text(json.dumps(doc))
    _expect_error(OciLayoutSource(root), r"manifest in oci-layout:.* does not match its digest")


def test_malformed_digest_cannot_reach_outside_the_layout(tmp_path):
    root = tmp_path / "img"
    root.mkdir()
    (root / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{"digest": "sha256:../../../etc/passwd"}]}))
    _expect_error(OciLayoutSource(root), r"malformed digest")


def _zstd_layout(root: Path, blob: bytes, diff_id: str | None = None) -> OciLayoutSource:
    digest = write_blob(root, blob)
    config = json.dumps({"rootfs": {"diff_ids": [diff_id] if diff_id else []}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": write_blob(root, config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                    "digest": digest}]}).encode()
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": write_blob(root, manifest)}]}))
    return OciLayoutSource(root)


def test_zstd_layers_fail_clearly_without_zstandard(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if it were not installed
    source = _zstd_layout(tmp_path / "img", b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    error = _expect_error(source, r"zstd-compressed")
    assert "zstandard" in error.remediation


def test_zstd_layers_are_streamed_with_zstandard(tmp_path):
    zstandard = pytest.importorskip("zstandard", reason="optional: reads zstd layers")
    tar = Layer().file("etc/os-release", "ID=alpine\nVERSION_ID=3.19.1\n").bytes()
    # Two frames, as chunked zstd layers are written.
    compressor = zstandard.ZstdCompressor()
    blob = compressor.compress(tar[:1024]) + compressor.compress(tar[1024:])
    files = read_image(_zstd_layout(tmp_path / "img", blob, sha256(tar)), wants)
    assert files.files["etc/os-release"][1].startswith(b"ID=alpine")


def test_docker_archive_with_traversing_member_is_refused(tmp_path):
    import io

    path = tmp_path / "evil.tar"
    manifest = json.dumps([{"Config": "../../etc/passwd", "Layers": []}]).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    _expect_error(DockerArchiveSource(path), r"outside the archive")


def test_missing_layout_is_a_clear_error(tmp_path):
    _expect_error(OciLayoutSource(tmp_path / "nowhere"), r"has no index.json")


def test_hard_links_to_wanted_files_carry_their_content(tmp_path):
    meta = f"{SITE}/a-1.0.dist-info/METADATA"
    linked = "opt/venv/lib/site-packages/a-1.0.dist-info/METADATA"
    tars = [Layer().file(meta, _meta("a", "1.0")).bytes(),
            Layer().hardlink(linked, meta).bytes()]
    files = read_image(_layout(tmp_path, tars), wants)
    assert files.files[linked] == (files.layers[1], files.files[meta][1])


def test_docker_archive_that_is_not_a_tar(tmp_path):
    path = tmp_path / "image.tar"
    path.write_bytes(b"PK\x03\x04 not a tar")
    _expect_error(DockerArchiveSource(path), r"is not a readable tar archive")


def test_manifest_kinds():
    from check.builtin.image import manifest_kind

    assert manifest_kind({"manifests": []}, "application/json") == "index"
    assert manifest_kind({"layers": [], "config": {}}, None) == "manifest"
    assert manifest_kind({}, "application/vnd.docker.distribution.manifest.list.v2+json") == \
        "index"
    schema1 = {"schemaVersion": 1, "fsLayers": [], "name": "x"}
    with pytest.raises(ImageError, match="not schema 1"):
        manifest_kind(schema1, "application/vnd.docker.distribution.manifest.v1+prettyjws")
