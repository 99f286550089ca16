"""The scanner registry (`check/scanners.py`): names, default choice, errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from check.external import GrypeScanner, TrivyScanner
from check.qscanner import QScanner
from check.scanners import SCANNERS, default_scanner_name, make_scanner, resolve_factory
from securityhub.errors import ConfigurationError

BIN = Path(__file__).resolve().parents[1] / "bin"
QUALYS = {"QUALYS_POD": "US1", "QUALYS_ACCESS_TOKEN": "registry-test-token-123456"}


def test_builtin_entry_is_registered_by_import_string():
    assert SCANNERS["builtin"] == "check.builtin.scanner:BuiltinScanner"
    assert set(SCANNERS) == {"qscanner", "trivy", "grype", "builtin"}


@pytest.mark.parametrize("name", sorted(set(SCANNERS) - {"builtin"}))
def test_every_entry_resolves_to_a_factory(name):
    factory = resolve_factory(SCANNERS[name])
    assert callable(factory)


def test_default_is_qscanner_when_configured(tmp_path):
    assert default_scanner_name({"QSCANNER_PATH": str(BIN / "qscanner")}) == "qscanner"
    assert default_scanner_name({"PATH": f"{BIN}:/usr/bin"}) == "qscanner"
    assert default_scanner_name({"PATH": str(tmp_path)}) == "builtin"


def test_make_default_and_named_scanners(tmp_path):
    env = {"QSCANNER_PATH": str(BIN / "qscanner"), "PATH": "/usr/bin:/bin", **QUALYS}
    assert isinstance(make_scanner(None, environ=env), QScanner)
    assert isinstance(make_scanner("auto", environ=env), QScanner)
    scanner = make_scanner("qscanner", {"mode": "evaluate-policy"}, environ=env)
    assert isinstance(scanner, QScanner) and scanner.config.mode == "evaluate-policy"
    tools = {"PATH": f"{BIN}:/usr/bin:/bin"}
    assert isinstance(make_scanner("trivy", environ=tools), TrivyScanner)
    assert isinstance(make_scanner("grype", environ=tools), GrypeScanner)
    for scanner in (make_scanner("trivy", environ=tools), make_scanner("grype", environ=tools)):
        assert scanner.name in {"trivy", "grype"} and scanner.version()


def test_unknown_scanner_lists_the_choices():
    with pytest.raises(ConfigurationError, match="unknown scanner 'clair'") as info:
        make_scanner("clair")
    assert "builtin, grype, qscanner, trivy" in info.value.remediation


def test_qscanner_configuration_errors_surface():
    with pytest.raises(ConfigurationError, match="needs Qualys credentials"):
        make_scanner(
            "qscanner", environ={"QSCANNER_PATH": str(BIN / "qscanner"), "QUALYS_POD": "US1"}
        )


def test_builtin_scanner_when_missing_or_present(tmp_path):
    if importlib.util.find_spec("check.builtin.scanner") is None:
        with pytest.raises(ConfigurationError, match="builtin scanner is not available"):
            make_scanner(None, environ={"PATH": str(tmp_path)})
    else:
        scanner = make_scanner(None, environ={"PATH": str(tmp_path)})
        assert type(scanner).__name__ == "BuiltinScanner"
