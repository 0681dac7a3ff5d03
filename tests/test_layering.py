"""The import contracts in pyproject.toml hold, and the allow-list contract type fails when a
package imports something off its list (so a kept contract means something)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def lint(cwd: Path, env_path: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{env_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([*LINT, "--no-cache", "--no-logo"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_project_import_contracts_are_kept():
    result = lint(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _package(tmp_path: Path, imports: str) -> Path:
    pkg = tmp_path / "plant"
    (pkg / "proto").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text("import json\n")
    (pkg / "proto" / "__init__.py").write_text("from plant import base\n" + textwrap.dedent(imports))
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""\
        [importlinter]
        root_package = plant
        include_external_packages = True
        contract_types =
            allowed: tests.layering.allowed.AllowedImportsContract

        [importlinter:contract:proto]
        name = proto imports only numpy and the base
        type = allowed
        source_modules = plant.proto
        allowed_modules =
            numpy
            plant.base
        """))
    return tmp_path


def test_allow_list_keeps_the_listed_imports(tmp_path):
    result = lint(_package(tmp_path, "import numpy\nimport os\n"), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_allow_list_breaks_on_an_import_off_the_list(tmp_path):
    result = lint(_package(tmp_path, "import numpy\nimport scipy\n"), tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "plant.proto -> scipy" in result.stdout


PLUGIN_WORDS = re.compile(r"modbus|opc-?ua|opc\.tcp|asyncua|\bpca\b|\bsensor\b", re.IGNORECASE)


def test_no_module_of_the_agent_names_a_builtin_plugin():
    """The agent knows drivers and detector families only through their contracts and the
    registry: a plugin's name in agent/ is a specific that belongs in the plugin."""
    named = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in sorted((ROOT / "agent").rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if PLUGIN_WORDS.search(line)]
    assert not named, "\n".join(named)
