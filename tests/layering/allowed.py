"""An import-linter contract type: a package may import only the modules on an allow-list.

The built-in ``forbidden`` type lists what may not be imported, which lets a new dependency slip
in unnoticed; a driver that may use only its protocol library, numpy and the driver contract is
said best the other way round. The standard library is always allowed.
"""

from __future__ import annotations

import sys

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class AllowedImportsContract(Contract):
    """Every module in ``source_modules`` (packages, with their descendants) imports only
    modules under ``allowed_modules``, its own package or the standard library."""

    type_name = "allowed"

    source_modules = fields.ListField(subfield=fields.ModuleField())
    allowed_modules = fields.ListField(subfield=fields.ModuleField())
    as_packages = fields.BooleanField(required=False, default=True)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        allowed = [m.name for m in self.allowed_modules]  # type: ignore[attr-defined]
        broken = []
        for source in self.source_modules:  # type: ignore[attr-defined]
            family = graph.find_descendants(source.name) if self.as_packages else set()  # type: ignore[attr-defined]
            for importer in sorted({source.name} | family):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    root = imported.split(".")[0]
                    own = _within(imported, source.name) if self.as_packages else imported == source.name  # type: ignore[attr-defined]
                    if (own or root in sys.stdlib_module_names
                            or any(_within(imported, a) for a in allowed)):
                        continue
                    lines = [d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)]
                    broken.append({"importer": importer, "imported": imported, "lines": lines})
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for b in check.metadata["broken"]:
            where = ", ".join(f"l.{n}" for n in b["lines"])
            output.print_error(f"{b['importer']} -> {b['imported']} ({where}): not on the allow-list", bold=False)
            output.new_line()
