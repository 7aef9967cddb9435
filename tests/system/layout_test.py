"""The package layout: no import cycles, command lines stay at the edge, one flag convention for
all console scripts, and the module table of docs/architecture.md names the tree as it is."""

import ast
import importlib
import os
import pathlib
import re

import pytest

from mst.cli import flags
from support import REPO

PACKAGE = REPO / "mst"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
  """Each mst module -> the mst modules it imports anywhere in its file: lazy imports and those
  under `if TYPE_CHECKING:` too (a type's module is a dependency all the same)."""
  modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        found |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    graph[name] = {m for m in found if m in modules and m != name and not name.startswith(m + ".")}
  return graph


# The layers of mst, lowest first: a module imports only from its own layer and those below it.
# Within a layer, modules may import each other (without cycles: the test above).
LAYERS = (
    ("mst.version", "mst.errors"),  # leaves
    ("mst.runtime",),  # the process: devices, caches, progress, safe output files
    ("mst.data",),  # images to model input; the datasets
    ("mst.models",),  # the network
    ("mst.config",),  # what a config means: keys, defaults, schema
    ("mst.checkpoints",),  # official .npz files and workdirs
    ("mst.scoring",),  # a loaded checkpoint scoring images; the Python API; the export
    ("mst.visualization",),  # pictures: the attention rollout, the scatter plot
    ("mst.evaluation",),  # metrics on a dataset split, tables, report.html; mst-eval's runs
    ("mst.training",),  # the trainer
    ("mst.configure",),  # a config file and overrides -> a typed run (the edge)
    ("mst.cli",),  # the console scripts
    ("mst",),  # the package root (`mst.load`)
)


def _layer(module: str) -> int:
  """The index in LAYERS of `module`'s layer (its longest matching entry)."""
  matches = [(len(entry), i) for i, layer in enumerate(LAYERS) for entry in layer
             if module == entry or module.startswith(entry + ".")]
  assert matches, f"{module} is in no layer: add it to LAYERS"
  return max(matches)[1]


def test_no_import_points_up_the_layers():
  graph = _imports()
  assert "mst.runtime.traced_cache" in graph["mst.checkpoints.architecture"]  # it parsed
  upward = sorted(f"{name} -> {target}" for name, imported in graph.items()
                  for target in imported if _layer(target) > _layer(name))
  assert upward == []


def test_the_layer_test_finds_a_planted_upward_import():
  assert _layer("mst.config.schema") < _layer("mst.training.trainer")
  assert _layer("mst.scoring.api") < _layer("mst")
  assert _layer("mst.version") == 0 and _layer("mst.errors") == 0


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle of `graph` (a path that returns to its start), or None."""
  state = {}

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return path[path.index(nxt):] + [nxt] if nxt in path else path + [nxt]
      if nxt not in state and (found := visit(nxt, path + [nxt])):
        return found
    state[node] = "done"
    return None

  for start in sorted(graph):
    if start not in state and (found := visit(start, [start])):
      return found
  return None


def test_cycle_finder_finds_a_planted_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_between_mst_modules():
  graph = _imports()
  assert "mst.checkpoints.loader" in graph and graph["mst.checkpoints.loader"]  # it parsed
  assert _cycle(graph) is None


def test_only_command_lines_import_the_cli_package():
  for name, imported in _imports().items():
    if not name.startswith("mst.cli"):
      assert not any(m.startswith("mst.cli") for m in imported), name


def _console_scripts() -> dict[str, str]:
  setup = (REPO / "setup.py").read_text()
  return dict(re.findall(r'"(mst-[a-z]+)=([a-z_.]+:[a-z_]+)"', setup))


def test_every_console_script_is_a_cli_module_main():
  scripts = _console_scripts()
  assert set(scripts) == {"mst-train", "mst-eval", "mst-predict", "mst-visualize",
                          "mst-datasets", "mst-export"}
  for target in scripts.values():
    module, function = target.split(":")
    assert module.startswith("mst.cli.") and function == "main"
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("script", ["mst-train", "mst-eval", "mst-predict", "mst-visualize",
                                    "mst-datasets", "mst-export"])
def test_help_explains_and_states_the_flag_spelling(script, capsys):
  module = importlib.import_module(_console_scripts()[script].split(":")[0])
  with pytest.raises(SystemExit) as exit_info:
    module.main(["--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  assert text.startswith(f"usage: {script}") and "examples:" in text
  assert flags.SPELLING_NOTE.split("(")[0] in text
  assert not re.search(r"--[a-z]+_[a-z_]+", text.split("examples:")[0].replace("--config.", "")), (
      "multi-word flags are spelled with dashes")


def test_underscore_spellings_become_dashes_and_nothing_else_changes():
  argv = ["--output_dir=a_b", "--batch_size", "2", "--config.model.grid_size=15", "x_y.png",
          "--", "--max_tokens"]
  assert flags.dashed(argv) == ["--output-dir=a_b", "--batch-size", "2",
                                "--config.model.grid_size=15", "x_y.png", "--", "--max_tokens"]


def test_the_module_table_matches_the_tree():
  page = (REPO / "docs" / "architecture.md").read_text()
  section = page.split("## How the pieces fit")[1]
  table = next(part for part in section.split("\n\n") if part.startswith("| folder |"))
  named = re.findall(r"^\| `([^`]+)` \|", table, re.M)
  for entry in named:
    assert (REPO / entry).exists(), entry
  subpackages = {f"mst/{p.name}/" for p in PACKAGE.iterdir()
                 if p.is_dir() and (p / "__init__.py").exists()}
  top_modules = {f"mst/{p.name}" for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
  assert subpackages | top_modules <= set(named)
  for entry in named:  # every file a row names in backticks exists in that folder
    row = next(line for line in table.splitlines() if line.startswith(f"| `{entry}`"))
    if entry.endswith("/"):
      for file in re.findall(r"`([a-z_]+\.py)`", row):
        assert os.path.exists(REPO / entry / file), f"{entry}{file}"


def test_below_the_edge_nothing_reads_a_raw_config():
  # The console scripts resolve a ConfigDict into typed values once (mst.configure.resolve); the
  # library under them takes those values.
  for path in PACKAGE.rglob("*.py"):
    if path.relative_to(PACKAGE).parts[0] in ("training", "evaluation", "models", "data"):
      assert "ml_collections" not in path.read_text(), path


def test_no_loose_modules():
  assert len([p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]) <= 6


def _mst_classes() -> list[tuple[str, str, ast.ClassDef]]:
  """(module, class name, node) of every class defined in mst/."""
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ClassDef):
        found.append((_module_name(path), node.name, node))
  return found


def test_no_two_classes_in_mst_share_a_name():
  names = [name for _, name, _ in _mst_classes()]
  assert "CheckpointError" in names  # it parsed
  assert sorted({name for name in names if names.count(name) > 1}) == []


def test_every_error_mst_defines_is_one_of_the_taxonomys_kinds():
  from mst import errors  # pylint: disable=g-import-not-at-top
  kinds = (errors.BadInput, errors.RunFailed, errors.Preempted)
  defined = [getattr(importlib.import_module(module), name) for module, name, _ in _mst_classes()
             if module != "mst.errors"]
  exceptions = [cls for cls in defined if isinstance(cls, type) and issubclass(cls, BaseException)]
  assert len(exceptions) >= 10
  assert [cls.__qualname__ for cls in exceptions if not issubclass(cls, kinds)] == []
  assert {kind.status for kind in kinds} == {errors.USAGE, errors.FAILED, errors.PREEMPTED}
