"""The package's shape, as the architecture issue set it: no import circles between the library's
modules (counting imports inside functions too), and no function in training/ or data/ longer than
about 60 lines."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "apvit_jax"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, modules: set) -> set:
  """The apvit_jax modules `path` imports, anywhere in the file (`from pkg import mod` counts as mod)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name in modules)
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("apvit_jax"):
      subs = {f"{node.module}.{a.name}" for a in node.names} & modules
      found.update(subs or ({node.module} & modules))
  return found


def test_no_import_circles():
  files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {name: _imports(path, set(files)) - {name} for name, path in files.items()}
  circles, state = [], {}

  def visit(node, trail):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        circles.append(trail[trail.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, trail + [nxt])
    state[node] = "done"

  for name in sorted(graph):
    if name not in state:
      visit(name, [name])
  assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_training_and_data_functions_are_short():
  long = []
  for folder in ("training", "data"):
    for path in sorted((PACKAGE / folder).glob("*.py")):
      for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          length = node.end_lineno - node.lineno + 1
          if length > 60:
            long.append(f"{path.name}:{node.lineno} {node.name} ({length} lines)")
  assert not long, "functions over 60 lines: " + ", ".join(long)
