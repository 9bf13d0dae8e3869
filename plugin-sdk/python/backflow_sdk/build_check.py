"""Build-time check of a Python plugin's imports (issue 41): `python3 -m backflow_sdk.build_check
[DIR]`, run by the templates' build.sh before componentize-py.

componentize-py puts in the component only the modules imported while it builds (it imports
the app and snapshots the interpreter). An `import` inside a function runs later, at run time,
where the module's file does not exist: the plugin fails with `ModuleNotFoundError` in the
middle of a sync. This check finds such imports in the project's own sources and fails the
build naming each one (file, line, module), unless the module is loaded anyway: imported at
the top of some module of the project or of the SDK, or preloaded by `backflow_sdk.stdlib`.
The fix it suggests: import the module at the top of the file.

Exit status 0 when every import is covered, 1 with one line per problem on stderr.
"""

import ast
import os
import sys

from .stdlib import LAZY

# Directories that are not the plugin's own sources.
SKIP_DIRS = {".venv", ".bindings", "dist", "__pycache__", "node_modules", "test", "tests", ".git"}


def python_files(root):
    """The project's .py files under `root` (relative paths, sorted), SDK and tests left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d != "backflow_sdk")
        for name in filenames:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def imports(tree):
    """(module, line, statement, at_top) for every absolute import in `tree`; `at_top` is False
    inside a function (or lambda) body, where the import runs only when the function does."""
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append((alias.name, child.lineno, f"import {alias.name}", not in_function))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = ", ".join(a.name for a in child.names)
                out.append((child.module, child.lineno, f"from {child.module} import {names}", not in_function))
                # `from package import submodule` at the top loads the submodule too.
                if not in_function:
                    for alias in child.names:
                        out.append((f"{child.module}.{alias.name}", child.lineno, "", True))
            visit(child, nested)

    visit(tree, False)
    return out


def loaded_names(modules):
    """Every module (and parent package) that importing `modules` loads."""
    names = set()
    for module in modules:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            names.add(".".join(parts[:i]))
    return names


def problems(root):
    """One message per import inside a function whose module the component would lack."""
    sdk_dir = os.path.dirname(os.path.abspath(__file__))
    top = set(LAZY)
    lazy = []
    own_modules = set()
    parsed = []
    for rel in python_files(root):
        own_modules.add(rel[:-3].replace(os.sep, ".").removesuffix(".__init__").split(".")[0])
        parsed.append((rel, os.path.join(root, rel)))
    for name in sorted(os.listdir(sdk_dir)):
        if name.endswith(".py"):
            parsed.append((None, os.path.join(sdk_dir, name)))
    for rel, path in parsed:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        try:
            tree = ast.parse(source, filename=path)
        except SyntaxError as e:
            if rel is None:
                continue
            return [f"{rel}:{e.lineno}: syntax error: {e.msg}"]
        for module, line, statement, at_top in imports(tree):
            if at_top:
                top.add(module)
            elif rel is not None:
                lazy.append((rel, line, statement, module))
    covered = loaded_names(top)
    out = []
    for rel, line, statement, module in lazy:
        root_name = module.split(".")[0]
        if module in covered or root_name in own_modules or root_name in ("wit_world", "componentize_py_types", "componentize_py_runtime", "componentize_py_async_support", "backflow_sdk"):
            continue
        out.append(
            f"{rel}:{line}: `{statement}` runs inside a function, after the component is built: "
            f"componentize-py includes only the modules imported at build time, so {module} "
            f"would be missing at run time (ModuleNotFoundError); import {module} at the top of {rel}"
        )
    return out


def main(argv):
    root = argv[1] if len(argv) > 1 else "."
    found = problems(root)
    for message in found:
        print(message, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
