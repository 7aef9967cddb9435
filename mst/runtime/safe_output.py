"""What mst writes is safe to open: no cell a spreadsheet runs, no name that breaks a file's
encoding, no metric that makes JSON invalid.

- `csv_cell`: every cell of every CSV mst writes (`mst-predict --format csv`, mst-eval's
  `predictions.csv`) goes through it, so a file named `=HYPERLINK(...).jpg` opens as text.
- `printable`: a file name that is not valid UTF-8 is written escaped (`bad\\xff.jpg`), in JSON
  lines, CSV, markdown and report.html alike, rather than failing the whole output.
- `json_dumps`: every JSON mst writes with metrics; an undefined metric (NaN, infinite) is
  `null`, never the `NaN` that strict JSON parsers refuse.

Imports nothing from mst: the writers of every layer can use it.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from typing import Any

# OWASP's CSV-injection advice: cells that begin with these are run as formulas by spreadsheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Text that is a number as Python formats one (-3.5, 1e-05, -inf, nan): left as it is.
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|nan)", re.IGNORECASE)


def printable(name: str | bytes) -> str:
  """`name` as text that encodes as UTF-8. Bytes that are not UTF-8 (raw bytes, or a file name
  Python decoded with surrogateescape, as it does on Linux) become `\\xNN`, as Python's
  `backslashreplace` writes them: `b"bad\\xff.jpg"` -> `bad\\xff.jpg`. Valid names are unchanged;
  an escaped one stays readable and names its bytes, so no result is lost for one bad name."""
  if isinstance(name, bytes):
    return name.decode("utf-8", "backslashreplace")
  try:
    name.encode("utf-8")
    return name
  except UnicodeEncodeError:
    pass
  try:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
  except UnicodeEncodeError:  # a lone surrogate that no file name decodes to: \ud800
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def csv_cell(value: Any) -> Any:
  """`value` as a CSV cell that a spreadsheet opens as data. Text that begins with `=`, `+`, `-`,
  `@`, a tab or a carriage return gets a leading `'` (OWASP's advice against CSV injection:
  Excel, LibreOffice and Google Sheets show it rather than run it as a formula). Numbers, and text
  that is a number (`-3.5`, as a score is written), are left as they are; text is `printable`."""
  if not isinstance(value, str):
    return value
  value = printable(value)
  if value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
    return "'" + value
  return value


def finite(value: Any) -> Any:
  """`value` ready for strict JSON, through dicts, lists and tuples: NaN and infinite numbers
  become None (null: the metric is undefined), numpy numbers and arrays Python ones, text
  `printable`."""
  if isinstance(value, dict):
    return {finite(k) if isinstance(k, str) else k: finite(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [finite(v) for v in value]
  if isinstance(value, str):
    return printable(value)
  if isinstance(value, bool) or value is None:
    return value
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return float(value) if math.isfinite(value) else None
  if hasattr(value, "tolist"):  # a numpy array or scalar
    return finite(value.tolist())
  return value


def json_dumps(value: Any, **kwargs) -> str:
  """`json.dumps` of `finite(value)` with `allow_nan=False`: valid JSON whatever the metrics."""
  return json.dumps(finite(value), allow_nan=False, **kwargs)
