"""The code blocks of a section of the README or of a page of docs/, so tests run the commands
the documentation shows and compare what they print with the output it shows."""

import re

from support import REPO



def section(file: str, heading: str) -> str:
  """The text under the heading `heading` (any level) of `file` (relative to the repository:
  "README.md", "docs/scoring.md"), up to the next heading of the same or a higher level, its
  subsections included. Lines inside code blocks are never taken for headings."""
  lines = (REPO / file).read_text().splitlines(keepends=True)
  start = level = None
  in_code = False
  for i, line in enumerate(lines):
    if line.startswith("```"):
      in_code = not in_code
      continue
    found = None if in_code else re.match(r"(#+) (.*?)\s*$", line)
    if not found:
      continue
    if start is None:
      if found.group(2) == heading:
        start, level = i + 1, len(found.group(1))
    elif len(found.group(1)) <= level:
      return "".join(lines[start:i])
  if start is None:
    raise ValueError(f"{file} has no heading {heading!r}")
  return "".join(lines[start:])


def code_blocks(file: str, heading: str, language: str) -> list[str]:
  """The ```language blocks under `heading` in `file` (see `section`), in order."""
  return re.findall(rf"^```{language}\n(.*?)^```", section(file, heading), re.S | re.M)
