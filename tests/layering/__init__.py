"""Import contracts that import-linter's built-in types cannot express (see [tool.importlinter])."""
