"""The package layering: the import graph of seekjax/ between its packages has no cycle.

Each package (seekjax/rl/, seekjax/run/, ...) and each top-level module (seekjax/plan.py,
...) is one node; an import anywhere in a file, at the top or inside a function, is an
edge from its node to the imported one. Entry points (train, evaluate, main) sit on top,
so nothing may import them.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "seekjax")
ENTRY_POINTS = {"seekjax.train", "seekjax.evaluate", "seekjax.main"}


def node_of(module: str) -> str:
  """'seekjax.rl.step' -> 'seekjax.rl'; 'seekjax.plan' -> 'seekjax.plan'."""
  parts = module.split(".")
  if len(parts) > 1 and os.path.isdir(os.path.join(PKG, parts[1])):
    return ".".join(parts[:2])
  return ".".join(parts[:2])


def imports_of(path: str, module: str) -> set[str]:
  """The seekjax modules a file imports (absolute and relative, any depth in the file)."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith("seekjax")}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = module.split(".")[:-node.level] if not path.endswith("__init__.py") \
            else module.split(".")[:len(module.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      if base.startswith("seekjax"):
        out.add(base)
        out |= {f"{base}.{a.name}" for a in node.names
                if os.path.exists(os.path.join(ROOT, *base.split("."), a.name + ".py"))}
  return out


def package_graph() -> dict[str, set[str]]:
  """{node: nodes it imports}, self-edges left out."""
  graph: dict[str, set[str]] = {}
  for dirpath, _, files in os.walk(PKG):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
      module = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
      src = node_of(module) if module != "seekjax" else "seekjax"
      deps = {node_of(m) for m in imports_of(path, module)} - {src, "seekjax"}
      graph.setdefault(src, set()).update(deps)
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` as [a, b, ..., a], or None."""
  state, stack = {}, []

  def visit(n):
    state[n] = "open"
    stack.append(n)
    for m in sorted(graph.get(n, ())):
      if state.get(m) == "open":
        return stack[stack.index(m):] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    state[n] = "done"
    stack.pop()
    return None

  for n in sorted(graph):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def test_find_cycle_finds_one_and_only_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_the_packages_and_their_imports():
  graph = package_graph()
  assert {"seekjax.rl", "seekjax.run", "seekjax.coldstart", "seekjax.rollout",
          "seekjax.helpers"} <= set(graph)
  assert "seekjax.rl" in graph["seekjax.run"]          # set-up builds the RL step
  assert "seekjax.helpers" in graph["seekjax.rollout"]  # the rollout asks helpers


def test_no_import_cycle_between_packages():
  assert find_cycle(package_graph()) is None, f"import cycle: {find_cycle(package_graph())}"


def test_nothing_imports_an_entry_point():
  graph = package_graph()
  users = {n: sorted(d & ENTRY_POINTS) for n, d in graph.items()
           if d & ENTRY_POINTS and n not in ENTRY_POINTS | {"seekjax.main"}}
  assert not users, users


def test_helpers_do_not_import_the_rollout():
  assert "seekjax.rollout" not in package_graph()["seekjax.helpers"]
