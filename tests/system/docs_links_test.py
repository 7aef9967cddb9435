"""The README stays a short read that leads to every page of docs/, and every link and section
reference in the README and docs/ leads somewhere: a file that exists, a heading it has."""

import re

import pytest

from support import REPO
from support.readme_code import code_blocks
from support.readme_code import section


PAGES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))
FILES = ["README.md"] + PAGES
# The README's sections, in order: what it is (the text above the first), then these.
README_SECTIONS = ["Install", "Quick start", "Score images with an official checkpoint",
                   "Use it from Python", "Train the demo", "Fine-tune", "Evaluate",
                   "Where to go next"]
README_MAX_LINES = 300  # about ten minutes of reading


def _prose(file):
  """`file` without its fenced code blocks."""
  return re.sub(r"^```.*?^```", "", (REPO / file).read_text(), flags=re.S | re.M)


def _slug(heading):
  """The anchor GitHub gives a heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(file):
  slugs, seen = set(), {}
  for heading in re.findall(r"^#+ (.*)$", _prose(file), re.M):
    slug = _slug(heading)
    slugs.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
    seen[slug] = seen.get(slug, 0) + 1
  return slugs


def _headings(file):
  return [h.strip() for h in re.findall(r"^#+ (.*)$", _prose(file), re.M)]


@pytest.mark.parametrize("file", FILES)
def test_every_link_leads_to_a_file_and_heading_that_exist(file):
  for target in re.findall(r"\]\(([^)\s]+)\)", _prose(file)):
    if re.match(r"[a-z]+:", target):
      continue  # a web address
    path, _, anchor = target.partition("#")
    resolved = ((REPO / file).parent / path).resolve() if path else REPO / file
    assert resolved.exists(), f"{file}: {target}: no such file"
    if anchor:
      assert resolved.suffix == ".md", f"{file}: {target}"
      relative = resolved.relative_to(REPO).as_posix()
      assert anchor in _anchors(relative), f"{file}: {target}: {relative} has no such heading"


@pytest.mark.parametrize("file", FILES)
def test_every_quoted_section_reference_names_a_heading(file):
  # References in prose such as (README, "Quick start") or (docs/training.md, "SLURM"): the
  # heading is the quoted text, or begins with it ("Prepared input pipeline" for the heading
  # that adds the config key).
  text = _prose(file).replace("\n", " ")
  for name, quoted in re.findall(r"(README|docs/[a-z_]+\.md|[a-z_]+\.md),? \(?\"([^\"]+)\"", text):
    target = "README.md" if name == "README" else name
    if not target.startswith("docs/") and target != "README.md":
      target = f"docs/{target}"
    assert (REPO / target).exists(), f"{file}: {name}"
    assert any(h == quoted or h.startswith(quoted + " ") for h in _headings(target)), (
        f"{file}: {name}, \"{quoted}\": {target} has no such heading")


def test_the_readme_is_a_short_read_in_the_order_a_newcomer_needs():
  text = (REPO / "README.md").read_text()
  assert len(text.splitlines()) <= README_MAX_LINES
  assert [h for h in re.findall(r"^## (.*)$", _prose("README.md"), re.M)] == README_SECTIONS


def test_every_page_of_docs_is_linked_from_the_readme_and_the_index():
  where_next = section("README.md", "Where to go next")
  index = (REPO / "docs" / "README.md").read_text()
  for page in PAGES:
    name = page.removeprefix("docs/")
    if name != "README.md":
      assert f"]({page})" in where_next, f"README, \"Where to go next\" does not link {page}"
      assert f"]({name})" in index, f"docs/README.md does not link {page}"
  assert "](docs/README.md)" in where_next


def test_the_readme_shows_the_full_suite_command_ci_runs():
  ci = (REPO / ".ci" / "run").read_text()
  (command,) = re.findall(r"^python3 -m pytest .*$", ci, re.M)
  assert command == 'python3 -m pytest -n 2 --dist loadgroup -m "" tests'
  blocks = code_blocks("README.md", "Quick start", "bash")
  assert [command] in [block.splitlines() for block in blocks]
  # and the quick tier the README opens with is pytest.ini's default selection
  assert any("python3 -m pytest -n 2 tests" in block for block in blocks)
  assert 'addopts = -m "not slow and not experiments"' in (REPO / "pytest.ini").read_text()
