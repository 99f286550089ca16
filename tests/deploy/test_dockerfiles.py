"""The Dockerfiles, checked statically, and the sidecar's entrypoint script, run for real.

A small parser reads each Dockerfile as the builder does: continuation lines joined,
comments dropped, `ARG` defaults substituted into `FROM`. Then the rules: a pinned base
image, a numeric non-root final USER, no `ADD` of URLs, no secrets in ENV or ARG defaults,
exec-form ENTRYPOINT, and the check image's QScanner checksum verification.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "check": ROOT / "docker" / "Dockerfile.check",
    "sidecar": ROOT / "docker" / "Dockerfile.sidecar",
}
ENTRYPOINT = ROOT / "docker" / "sidecar-entrypoint.sh"
SECRET_WORDS = re.compile(r"(?i)(token|secret|password|passwd|credential|api[_-]?key|access[_-]?key)")


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def parse(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    args = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            args[name] = default
    return args


@pytest.fixture(params=sorted(DOCKERFILES), ids=str)
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[Instruction]]:
    return request.param, parse(DOCKERFILES[request.param])


def test_parser_reads_continuations() -> None:
    instructions = parse(DOCKERFILES["check"])
    runs = [i for i in instructions if i.keyword == "RUN"]
    assert any("pip install" in r.args and "--constraint" in r.args for r in runs)


def test_base_images_are_pinned(dockerfile: tuple[str, list[Instruction]]) -> None:
    _, instructions = dockerfile
    args = global_args(instructions)
    for ins in instructions:
        if ins.keyword != "FROM":
            continue
        image = ins.args.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"line {ins.line}: {image} is not pinned"
        # A full version (3.11.10), not a moving minor tag (3.11).
        assert re.match(r"\d+\.\d+\.\d+", tag), f"line {ins.line}: {image} is not a patch version"


def test_final_user_is_numeric_and_not_root(dockerfile: tuple[str, list[Instruction]]) -> None:
    _, instructions = dockerfile
    final = stages(instructions)[-1]
    users = [i for i in final if i.keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].args.split(":")[0]
    assert user.isdigit() and int(user) != 0
    # Nothing runs as root after the USER switch.
    after = final[final.index(users[-1]):]
    assert not [i for i in after if i.keyword == "RUN"]


def test_no_remote_add_and_no_secrets(dockerfile: tuple[str, list[Instruction]]) -> None:
    _, instructions = dockerfile
    for ins in instructions:
        if ins.keyword == "ADD":
            assert not re.search(r"https?://|git@", ins.args), f"line {ins.line}: ADD of a URL"
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"(\w+)=", ins.args) or [ins.args.split()[0]]
            for name in names:
                assert not SECRET_WORDS.search(name), f"line {ins.line}: {name} looks like a secret"


def test_entrypoint_is_exec_form(dockerfile: tuple[str, list[Instruction]]) -> None:
    name, instructions = dockerfile
    entrypoints = [i for i in instructions if i.keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    argv = json.loads(entrypoints[0].args)
    expected = {"check": ["containerscan"], "sidecar": ["containerscan-entrypoint"]}[name]
    assert argv == expected
    # A batch task and a non-essential monitor have nothing to probe: said explicitly.
    healthchecks = [i.args for i in instructions if i.keyword == "HEALTHCHECK"]
    assert healthchecks == ["NONE"]


def test_check_image_verifies_qscanner() -> None:
    instructions = parse(DOCKERFILES["check"])
    final = stages(instructions)[-1]
    args = {i.args.partition("=")[0] for i in final if i.keyword == "ARG"}
    assert {"QSCANNER_BINARY", "QSCANNER_SHA256"} <= args
    sha_arg = next(i for i in final if i.keyword == "ARG" and i.args.startswith("QSCANNER_SHA256"))
    assert "=" not in sha_arg.args  # no default: the builder must give the checksum
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert "sha256sum -c" in runs


def test_images_keep_writes_under_tmp(dockerfile: tuple[str, list[Instruction]]) -> None:
    """Read-only root file system: HOME, TMPDIR and the working directory are /tmp."""
    _, instructions = dockerfile
    final = stages(instructions)[-1]
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "TMPDIR=/tmp" in env and "HOME=/tmp" in env
    assert [i.args for i in final if i.keyword == "WORKDIR"][-1] == "/tmp"


def test_dockerignore_is_an_allow_list() -> None:
    lines = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert "tests" not in allowed and ".git" not in allowed
    # Everything the Dockerfiles COPY from the context is allowed in.
    for path in DOCKERFILES.values():
        for ins in parse(path):
            if ins.keyword == "COPY" and "--from=" not in ins.args:
                sources = ins.args.split()[:-1]
                for source in sources:
                    if source.startswith("${"):
                        continue  # QSCANNER_BINARY: added by release.imagebuild
                    assert any(source == a or source.startswith(a + "/") for a in allowed), source


# -------------------------------------------------------------------------- entrypoint


@pytest.fixture
def fake_containerscan(tmp_path: Path) -> Path:
    """A `containerscan` that reports its argv, its environment and the policy file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "containerscan"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        "path = os.environ.get('TRACING_POLICY_PATH')\n"
        "doc = open(path).read() if path and os.path.exists(path) else None\n"
        "mode = oct(os.stat(path).st_mode & 0o777) if doc is not None else None\n"
        "print(json.dumps({'argv': sys.argv[1:], 'path': path, 'doc': doc, 'mode': mode,\n"
        "                  'leaked': 'TRACING_POLICY_DOCUMENT' in os.environ}))\n"
    )
    script.chmod(0o755)
    return bindir


def _run_entrypoint(bindir: Path, tmp: Path, extra_env: dict[str, str], *args: str) -> dict:
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "TMPDIR": str(tmp), **extra_env}
    proc = subprocess.run([str(ENTRYPOINT), *args], env=env, capture_output=True, text=True,
                          timeout=30, check=True)
    return json.loads(proc.stdout)


def test_entrypoint_is_executable() -> None:
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR


def test_entrypoint_writes_the_ssm_policy_privately(fake_containerscan: Path, tmp_path: Path) -> None:
    policy = "apiVersion: security.qualys.com/v1\nkind: TracingPolicy\nmetadata:\n  name: 'x; rm -rf /'\n"
    out = _run_entrypoint(fake_containerscan, tmp_path, {"TRACING_POLICY_DOCUMENT": policy},
                          "sidecar", "run", "--", "sh", "-c", "echo $HOME")
    assert out["argv"] == ["sidecar", "run", "--", "sh", "-c", "echo $HOME"]
    assert out["path"] == str(tmp_path / "containerscan-policy" / "policy.yaml")
    assert out["doc"] == policy + "\n"
    assert out["mode"] == "0o600"
    assert out["leaked"] is False


def test_entrypoint_leaves_an_s3_policy_path_alone(fake_containerscan: Path, tmp_path: Path) -> None:
    out = _run_entrypoint(fake_containerscan, tmp_path,
                          {"TRACING_POLICY_PATH": "s3://bucket/policy.yaml"}, "sidecar", "attach", "--all")
    assert out["argv"] == ["sidecar", "attach", "--all"]
    assert out["path"] == "s3://bucket/policy.yaml"
    assert not (tmp_path / "containerscan-policy").exists()


def test_every_stage_takes_its_base_from_the_build_argument(
    dockerfile: tuple[str, list[Instruction]],
) -> None:
    """`--build-arg BASE_IMAGE=...` swaps the base of every stage (tests/deploy/
    test_images_built.py builds on a local Debian); the default stays the pinned image."""
    _, instructions = dockerfile
    assert global_args(instructions)["BASE_IMAGE"].startswith("python:3.11")
    bases = [ins.args.split()[0] for ins in instructions if ins.keyword == "FROM"]
    assert len(bases) >= 2 and set(bases) == {"${BASE_IMAGE}"}


def test_the_build_stage_has_every_file_setup_cfg_installs(
    dockerfile: tuple[str, list[Instruction]],
) -> None:
    """setup.cfg's data_files (the bundled policies) must be in the build stage before pip
    builds the wheel: without them the build fails (found by building the images)."""
    _, instructions = dockerfile
    build = stages(instructions)[0]
    copied = [ins.args.split()[0] for ins in build if ins.keyword == "COPY"]
    install = next(i for i, ins in enumerate(build) if "pip install" in ins.args)
    before = {ins.args.split()[0] for ins in build[:install] if ins.keyword == "COPY"}
    assert "policies" in before, copied


def test_images_do_not_ship_the_quick_start_advisories() -> None:
    """The ~14 MB of advisory records under check/quickstart/advisories are for the local
    demo and the tests: .dockerignore keeps them out of the context the release tool sends
    (release.imagebuild, with the Docker SDK's .dockerignore rules), so out of the wheel
    the images install; the code beside them stays."""
    from release import imagebuild

    for spec in imagebuild.IMAGES.values():
        files = imagebuild.context_files(imagebuild.ROOT, spec)
        assert not [f for f in files if f.startswith("check/quickstart/advisories/")]
        assert "check/quickstart/data.py" in files and "check/builtin/advisories.py" in files
