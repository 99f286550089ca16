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
