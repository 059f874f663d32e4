"""Which backend names a piece of code uses: the check that keeps the core (tests/backends/test_boundary.py) and
the GPU catalog (tests/test_gpus.py) free of them."""
from __future__ import annotations

import ast
import re

from launcher.backends import BACKENDS


def backend_words(source: str) -> list[str]:
    """Backend names in the code's identifiers, attributes and strings, `_` counting as a word break (`ec2_usd`,
    `modal_spec`); comments and docstrings may name one, and `modal-volume://` is a datapool store's scheme."""
    names = sorted({*BACKENDS, "ec2", "k8s", "modal", "slurm", "ssh"} - {"local"})
    word = re.compile(r"(?<![a-z0-9])(" + "|".join(map(re.escape, names)) + r")(?![a-z0-9]|-volume)", re.IGNORECASE)
    tree = ast.parse(source)
    docstrings = {id(body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and (body := node.body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += word.findall(node.value)
        elif isinstance(node, ast.Name):
            found += word.findall(node.id)
        elif isinstance(node, ast.Attribute):
            found += word.findall(node.attr)
        elif isinstance(node, ast.arg):
            found += word.findall(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found += word.findall(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found += word.findall(" ".join([getattr(node, "module", None) or "", *(a.name for a in node.names)]))
    return found
