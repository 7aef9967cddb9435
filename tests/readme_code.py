"""The code blocks of a README section, so tests run the commands the README shows."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(section: str, language: str) -> list[str]:
  """The ```language blocks under the `## section` heading of README.md, in order."""
  text = README.read_text()
  body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
  return re.findall(rf"```{language}\n(.*?)```", body, re.S)
