"""TracingPolicy loading: the seed's snippets, bundled policies, invalid policies, overrides, CLI."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from securityhub.aws import SessionFactory
from securityhub.errors import ConfigurationError, PolicyError
from sidecar.policy import (
    MODE_FILES,
    load_policies,
    merge,
    parse_policy_text,
    policies_dir,
    resolve_policy,
)
from sidecar.policy_commands import policy as policy_group

ROOT = Path(__file__).resolve().parents[2]
# The project seed that defined the TracingPolicy format (shared/seeds/001_86c68e7e7b635d86.txt),
# copied into the repository so that a clone has it.
SEED = ROOT / "tests" / "data" / "seeds" / "tracing-policies-seed.md"
DATA = ROOT / "tests" / "data" / "policies"
HEADER = "apiVersion: security.qualys.com/v1\nkind: TracingPolicy\nmetadata:\n  name: snippet\n"


def seed_snippets() -> list[str]:
    text = SEED.read_text(encoding="utf-8")
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


def as_policy(snippet: str) -> str:
    """A whole policy as is; a fragment (a bare section) becomes a section of a spec."""
    if snippet.lstrip().startswith("apiVersion"):
        return snippet
    return HEADER + "spec:\n" + textwrap.indent(snippet, "  ")


def test_every_yaml_snippet_of_the_seed_validates() -> None:
    snippets = seed_snippets()
    assert len(snippets) >= 9  # the document's YAML examples, all of them
    for snippet in snippets:
        docs = parse_policy_text(as_policy(snippet), "seed")
        assert docs and docs[0].data["kind"] == "TracingPolicy"


@pytest.mark.parametrize("mode", sorted(MODE_FILES))
def test_bundled_modes_load(mode: str) -> None:
    policy = resolve_policy({"MONITORING_MODE": mode})
    assert policy.sources and all(Path(s).exists() for s in policy.sources)


def test_balanced_merges_two_files() -> None:
    policy = resolve_policy({})  # balanced is the default
    assert policy.names == ("fim-policy", "software-detection-policy")
    assert policy.fim.enabled and policy.software.enabled
    assert {m.name for m in policy.software.package_managers} >= {"apt", "pip", "npm", "cargo"}
    kinds = {d.type for d in policy.actions.destinations}
    assert kinds == {"qualys-crs"}
    events = {t for d in policy.actions.destinations for t in d.event_types}
    assert events == {"file_change", "software_installation"}


def test_aggressive_covers_every_section() -> None:
    policy = load_policies([policies_dir() / "tracing-policy-schema.yaml"])
    assert policy.fim.enabled and policy.process.enabled and policy.network.enabled
    assert policy.software.enabled and policy.anomaly.enabled
    assert policy.syscalls.traced >= {"execve", "connect", "ptrace"}
    assert policy.actions.qualys.enabled
    assert policy.actions.qualys.endpoint == "https://gateway.qg2.apps.qualys.com"
    assert policy.performance.batch_size == 50
    assert any(t.capture_args and t.args for t in policy.process.tracked)


def test_merge_semantics(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        HEADER.replace("snippet", "a")
        + textwrap.dedent("""\
        spec:
          networkMonitoring:
            outboundConnections: {allowlist: [10.0.0.0/8], blockedPorts: [22]}
          syscallFiltering: {tracedSyscalls: [execve]}
          performance: {samplingRate: 0.5, batchSize: 5}
        """)
    )
    (tmp_path / "b.yml").write_text(
        HEADER.replace("snippet", "b")
        + textwrap.dedent("""\
        spec:
          networkMonitoring:
            enabled: true
            outboundConnections: {allowlist: [192.168.0.0/16, 10.0.0.0/8], blockedPorts: [3389]}
          syscallFiltering: {tracedSyscalls: [connect]}
          performance: {batchSize: 7}
        """)
    )
    policy = load_policies([tmp_path])  # a directory: its *.yaml and *.yml files
    assert policy.names == ("a", "b")
    assert policy.network.allowlist == ("10.0.0.0/8", "192.168.0.0/16")
    assert policy.network.blocked_ports == {22, 3389}
    assert policy.syscalls.traced == {"execve", "connect"}
    assert policy.performance.sampling_rate == 0.5  # from a, b does not say
    assert policy.performance.batch_size == 7  # the later file wins


# ------------------------------------------------------------------------ invalid policies

INVALID = {
    # file: (line, words the message must contain)
    "duplicate-key.yaml": (11, ["duplicate key 'events'", "line 10", "merge"]),
    "unknown-key.yaml": (10, ["unknown key 'recursiv'", "did you mean 'recursive'"]),
    "bad-cidr.yaml": (11, ["'10.1.2.3/16'", "host bits", "did you mean 10.1.0.0/16"]),
    "bad-port.yaml": (11, ["port 70000", "between 1 and 65535"]),
    "unknown-syscall.yaml": (9, ["unknown syscall 'conect'", "did you mean 'connect'"]),
    "bad-regex.yaml": (10, ["not accepted by RE2", "missing )", "escape"]),
    # RE2 runs in linear time and has no backreferences: refused at load, not at runtime
    "backreference.yaml": (10, ["not accepted by RE2", "backreferences", "rewrite"]),
    "bad-severity.yaml": (10, ["'severe' is not allowed", "low, medium, high, critical"]),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_policy_names_file_line_and_fix(name: str) -> None:
    line, words = INVALID[name]
    path = DATA / name
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    problems = caught.value.problems
    assert len(problems) == 1, problems
    where, message = problems[0]
    assert where.startswith(f"{path}:{line}:"), where
    for word in words:
        assert word in message, message


def test_unknown_section_and_wrong_kind() -> None:
    text = textwrap.dedent("""\
        apiVersion: security.qualys.com/v1
        kind: TracingPolicies
        metadata: {name: x}
        spec:
          fileIntegrityMonitorin: {enabled: true}
        """)
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, "inline.yaml")
    text_of = str(caught.value)
    assert "inline.yaml:5" in text_of and "did you mean 'fileIntegrityMonitoring'" in text_of
    # the structural pass stops before the schema: fix the keys first, then the values
    fixed = text.replace("Monitorin:", "Monitoring:")
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(fixed, "inline.yaml")
    assert "inline.yaml:2" in str(caught.value) and "TracingPolicy" in str(caught.value)


def test_yaml_syntax_error_and_empty_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: x\nspec:\n  - [unclosed\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([broken])
    assert f"{broken}:" in str(caught.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(PolicyError, match="empty"):
        load_policies([empty])
    with pytest.raises(PolicyError, match="does not exist"):
        load_policies([tmp_path / "missing.yaml"])


def test_wrong_shape_is_plain_language() -> None:
    text = HEADER + "spec:\n  fileIntegrityMonitoring:\n    paths: /etc/passwd\n"
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, "p.yaml")
    assert "p.yaml:7" in str(caught.value) and "expected a list" in str(caught.value)


def test_relative_fim_path_is_rejected() -> None:
    text = HEADER + "spec:\n  fileIntegrityMonitoring:\n    paths:\n      - path: etc/passwd\n"
    with pytest.raises(PolicyError, match="absolute path such as /etc/passwd"):
        parse_policy_text(text, "p.yaml")


def test_unknown_package_manager() -> None:
    text = HEADER + "spec:\n  softwareInstallation:\n    packageManagers:\n      - name: pipx3\n"
    with pytest.raises(PolicyError, match="unknown package manager 'pipx3'; did you mean"):
        parse_policy_text(text, "p.yaml")


def test_aarch64_only_and_x86_only_names_are_accepted() -> None:
    text = HEADER + "spec:\n  syscallFiltering:\n    tracedSyscalls: [open, openat, renameat2]\n"
    assert parse_policy_text(text, "p.yaml")


# ---------------------------------------------------------------------------- overrides


def test_environment_overrides() -> None:
    policy = resolve_policy(
        {
            "MONITORING_MODE": "minimal",
            "ALERT_THRESHOLD": "1.5",
            "SYSCALL_WHITELIST": "execve, connect,read",
            "NETWORK_POLICY": "10.1.0.0/16,fd00::/8",
            "CONTAINERSCAN_LEARNING_WINDOW": "30",
            "CONTAINERSCAN_LEARNING_EVENTS": "500",
        }
    )
    assert policy.anomaly.enabled  # minimal has no anomaly section: the threshold enables it
    assert policy.anomaly.alert_threshold == 1.5
    assert policy.anomaly.learning_events == 500
    assert policy.anomaly.learning_window == 30
    assert policy.syscalls.whitelist == {"execve", "connect", "read"}
    assert policy.network.allowlist == ("10.1.0.0/16", "fd00::/8")


def test_bad_overrides_name_the_variable() -> None:
    with pytest.raises(PolicyError) as caught:
        resolve_policy(
            {
                "MONITORING_MODE": "minimal",
                "ALERT_THRESHOLD": "high",
                "SYSCALL_WHITELIST": "execev",
                "NETWORK_POLICY": "10.0.0.1/8",
            }
        )
    where = [w for w, _ in caught.value.problems]
    assert where == ["ALERT_THRESHOLD", "SYSCALL_WHITELIST", "NETWORK_POLICY"]
    assert "did you mean 'execve'" in str(caught.value)
    with pytest.raises(ConfigurationError, match="MONITORING_MODE"):
        resolve_policy({"MONITORING_MODE": "agressive"})


def test_cli_paths_win_over_environment() -> None:
    policy = resolve_policy(
        {"MONITORING_MODE": "aggressive", "TRACING_POLICY_PATH": str(DATA / "bad-port.yaml")},
        cli_paths=[str(DATA / "valid-block.yaml")],
    )
    assert policy.names == ("valid-block",)
    policy = resolve_policy({"TRACING_POLICY_PATH": str(DATA / "valid-block.yaml")})
    assert policy.names == ("valid-block",)
    inline = resolve_policy({"TRACING_POLICY_DOCUMENT": (DATA / "valid-block.yaml").read_text()})
    assert inline.names == ("valid-block",)
    with pytest.raises(PolicyError) as caught:
        resolve_policy({"TRACING_POLICY_DOCUMENT": (DATA / "bad-port.yaml").read_text()})
    assert caught.value.problems[0][0].startswith("TRACING_POLICY_DOCUMENT:11:")


def test_policy_dir_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "minimal-policy.yaml").write_text(
        (DATA / "valid-block.yaml").read_text()
    )
    policy = resolve_policy(
        {"MONITORING_MODE": "minimal", "CONTAINERSCAN_POLICY_DIR": str(tmp_path)}
    )
    assert policy.names == ("valid-block",)


@mock_aws
def test_tracing_policy_path_from_s3() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="policies")
    s3.put_object(
        Bucket="policies", Key="prod/a.yaml", Body=(DATA / "valid-block.yaml").read_bytes()
    )
    s3.put_object(
        Bucket="policies",
        Key="prod/b.yaml",
        Body=(policies_dir() / "examples/minimal-policy.yaml").read_bytes(),
    )
    s3.put_object(Bucket="policies", Key="bad.yaml", Body=(DATA / "bad-cidr.yaml").read_bytes())
    sessions = SessionFactory("us-east-1")
    one = resolve_policy({"TRACING_POLICY_PATH": "s3://policies/prod/a.yaml"}, sessions=sessions)
    assert one.names == ("valid-block",)
    both = resolve_policy({"TRACING_POLICY_PATH": "s3://policies/prod/"}, sessions=sessions)
    assert both.names == ("valid-block", "minimal-runtime-security")
    with pytest.raises(PolicyError) as caught:
        resolve_policy({"TRACING_POLICY_PATH": "s3://policies/bad.yaml"}, sessions=sessions)
    assert caught.value.problems[0][0].startswith("s3://policies/bad.yaml:11:")


# ---------------------------------------------------------------------------------- CLI


def test_cli_validate_exit_codes() -> None:
    runner = CliRunner()
    ok = runner.invoke(policy_group, ["validate", str(policies_dir() / "examples")])
    assert ok.exit_code == 0, ok.output
    assert "ok: " in ok.output and "minimal-runtime-security" in ok.output
    bad = runner.invoke(
        policy_group, ["validate", str(DATA / "valid-block.yaml"), str(DATA / "unknown-key.yaml")]
    )
    assert bad.exit_code == 2
    assert "did you mean 'recursive'" in bad.output and "unknown-key.yaml:10" in bad.output
    shown = runner.invoke(
        policy_group, ["validate", "--show", str(policies_dir() / "examples/minimal-policy.yaml")]
    )
    assert shown.exit_code == 0
    doc = json.loads(shown.output[shown.output.index("{") :])
    assert doc["syscalls"] == sorted(
        ["connect", "execve", "execveat", "io_uring_setup", "sendmmsg", "sendmsg", "sendto"]
    )


def test_cli_schema_prints_the_schema() -> None:
    result = CliRunner().invoke(policy_group, ["schema"])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["title"] == "TracingPolicy"
    assert set(doc["properties"]["spec"]["properties"]) >= {
        "fileIntegrityMonitoring",
        "processExecution",
        "networkMonitoring",
        "softwareInstallation",
        "syscallFiltering",
        "actions",
        "performance",
    }


def test_cli_through_the_console_entry_point() -> None:
    """The real `containerscan` entry: exit 2 and the message on stderr, 0 when valid."""
    import subprocess
    import sys

    bad = subprocess.run(
        [sys.executable, "-m", "check", "policy", "validate", str(DATA / "bad-cidr.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "bad-cidr.yaml:11" in bad.stderr and "did you mean 10.1.0.0/16" in bad.stderr
    good = subprocess.run(
        [
            sys.executable,
            "-m",
            "check",
            "policy",
            "validate",
            str(policies_dir() / "tracing-policy-schema.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr


def _schema_keys(node: dict, prefix: str = "") -> set[str]:  # type: ignore[type-arg]
    from sidecar.policy import schema

    keys: set[str] = set()
    if "$ref" in node:
        node = schema()["$defs"][node["$ref"].rsplit("/", 1)[1]]
    for key, child in node.get("properties", {}).items():
        keys.add(prefix + key)
        keys |= _schema_keys(child, prefix + key + ".")
    items = node.get("items")
    if isinstance(items, dict):
        keys |= _schema_keys(items, prefix)
    return keys


def _data_keys(data: object, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            keys.add(prefix + key)
            keys |= _data_keys(value, prefix + key + ".")
    elif isinstance(data, list):
        for item in data:
            keys |= _data_keys(item, prefix)
    return keys


def test_the_aggressive_policy_uses_every_key_of_the_schema() -> None:
    """Meta-test: the full policy shows every key, so none is undocumented or untested."""
    from sidecar.policy import load_documents, schema

    (doc,) = load_documents([policies_dir() / "tracing-policy-schema.yaml"])
    unused = _schema_keys(schema()) - _data_keys(doc.data)
    # metadata extras and the SNS topic (taken from SNS_TOPIC_ARN in the bundled policy)
    assert unused == {
        "metadata.namespace",
        "metadata.labels",
        "metadata.annotations",
        "spec.actions.alert.destinations.topicArn",
    }


def test_every_yaml_example_in_the_policies_readme_validates() -> None:
    """The README's examples are spec fragments: each must load as a policy's spec."""
    text = (policies_dir() / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        spec = textwrap.indent(textwrap.dedent(block), "  ")
        policy = merge(parse_policy_text(f"{HEADER}spec:\n{spec}", "README example"))
        assert policy.names == ("snippet",)


def test_the_sections_own_the_schema_and_the_published_file_matches() -> None:
    """Cloud Custodian's meta-tests: the registry covers the spec, every section's fragment
    is a closed object, and policies/tracing-policy.schema.json is what the sections say
    (regenerate it with `containerscan policy schema > policies/tracing-policy.schema.json`)."""
    import json

    from sidecar.policy import schema
    from sidecar.policy_model import Policy
    from sidecar.policy_sections import SECTIONS

    published = json.loads((policies_dir() / "tracing-policy.schema.json").read_text())
    assert published == schema()
    assert set(schema()["properties"]["spec"]["properties"]) == set(SECTIONS)
    fields = set(Policy.__dataclass_fields__)
    for key, cls in SECTIONS.items():
        assert cls.key == key and cls.attr in fields
        assert cls.schema["type"] == "object" and cls.schema["additionalProperties"] is False
        # every section merges "absent everywhere" into its model's defaults
        assert cls.merge([{}]) == getattr(Policy(), cls.attr), key
