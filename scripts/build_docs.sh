#!/usr/bin/env bash
# The API reference, generated from the docstrings by pdoc into build/api/ (or $2). Every module of
# the package is documented (the __main__ modules, which run a program when imported, aside), and
# any warning pdoc prints fails the build, so a broken reference cannot land unseen.
set -euo pipefail
py=${1:-.venv/bin/python}
out=${2:-build/api}
modules=$("$py" - <<'PY'
import importlib
import pkgutil

import pdoc.doc

import chainrule

# pdoc documents the submodules it finds under a module it is given (those a package's __all__
# leaves out it does not find): give it, in order, each module that none given before reaches.
reached: set[str] = set()
names = []
candidates = ["chainrule"] + [
    info.name
    for info in pkgutil.walk_packages(chainrule.__path__, "chainrule.")
    if not info.name.endswith("__main__")
]
for name in candidates:
    if name in reached:
        continue
    names.append(name)
    stack = [pdoc.doc.Module(importlib.import_module(name))]
    while stack:
        module = stack.pop()
        reached.add(module.modulename)
        stack.extend(module.submodules)
print(" ".join(names))
PY
)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086  (one argument per module name)
if ! "$py" -m pdoc --docformat restructuredtext --output-directory "$out" $modules 2>"$log"; then
  cat "$log" >&2
  exit 1
fi
if grep -q . "$log"; then
  cat "$log" >&2
  echo "make docs: pdoc printed the warnings above" >&2
  exit 1
fi
echo "API reference: $out/index.html ($(wc -w <<<"$modules") modules)"
