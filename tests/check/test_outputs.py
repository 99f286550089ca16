"""Run outputs in S3 (moto): server-side encryption, SSE-S3 or SSE-KMS, failures counted."""

from __future__ import annotations

import boto3
from moto import mock_aws

from check.outputs import RunOutputs

REGION = "us-east-1"


@mock_aws
def test_outputs_are_encrypted_with_the_configured_kms_key() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="runs")
    key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
    outputs = RunOutputs(s3=s3, bucket="runs", prefix="cs/", kms_key_id=key_id)
    outputs.write_json("runs/r1/status.json", {"run_id": "r1"})
    head = s3.head_object(Bucket="runs", Key="cs/runs/r1/status.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]
    assert outputs.locations("r1") == ["s3://runs/cs/runs/r1/"]


@mock_aws
def test_a_missing_bucket_is_counted_not_fatal() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    outputs = RunOutputs(s3=s3, bucket="no-such-bucket")
    outputs.write_json("runs/r1/status.json", {})
    assert outputs.written == 0
    assert outputs.errors and "NoSuchBucket" in outputs.errors[0]


def test_an_unreadable_inventory_is_an_output_error_not_a_failed_run(tmp_path) -> None:
    raw = tmp_path / "builtin-inventory.json"
    raw.write_text("{not json")
    outputs = RunOutputs(local_dir=tmp_path / "out")
    outputs.write_sbom("runs/r/images/sha256-x", [raw], image_name="app", digest="sha256:x",
                       tool_version="1")
    assert outputs.written == 0 and len(outputs.errors) == 1
    assert "runs/r/images/sha256-x/sbom.cdx.json" in outputs.errors[0]
    assert not (tmp_path / "out").exists()
