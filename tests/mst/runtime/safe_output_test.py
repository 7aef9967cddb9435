"""What mst writes is safe to open: CSV cells a spreadsheet would run are neutralised, names that
are not UTF-8 are escaped (never a failed output), JSON metrics are strict JSON (null, not NaN),
and report.html renders constant and non-finite results, saying what is undefined."""

import csv
import io
import json
import math
import os
import re

import numpy as np
import pytest
from PIL import Image

from mst.cli import predict
from mst.cli import result_files
from mst.evaluation import cross_dataset
from mst.evaluation import html_report
from mst.evaluation import metrics
from mst.evaluation import report
from mst.runtime import safe_output

FORMULA_NAMES = ('=HYPERLINK("x").jpg', "+1.jpg", "-cmd.jpg", "@a.jpg", "\tx.jpg")


def _image(path, seed=0):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(path, format="PNG")


def _strict_json(text):
  """json.loads that refuses NaN and Infinity, as strict parsers (JavaScript, Go, jq) do."""
  def refuse(constant):
    raise ValueError(f"{constant} is not JSON")
  return json.loads(text, parse_constant=refuse)


def test_the_rule_neutralises_text_that_starts_a_formula_and_leaves_numbers_alone():
  for text in ("=1+1", "+1.jpg", "-cmd.jpg", "@SUM(A1)", "\tx.jpg", "\rx.jpg", "-", "-1+cmd"):
    assert safe_output.csv_cell(text) == "'" + text
  for value in ("a.jpg", "photos/=x.jpg", "-3.5", "+2", "1e-05", "-1.5E+03", "-inf", "nan", -3.5,
                2, None, ""):
    assert safe_output.csv_cell(value) == value or value != value
  assert safe_output.csv_cell("bad\udcff.jpg") == "bad\\xff.jpg"
  assert safe_output.csv_cell("-bad\udcff.jpg") == "'-bad\\xff.jpg"


def test_names_that_are_not_utf8_are_escaped_the_same_way_everywhere():
  name = os.fsdecode(b"dir/bad\xff\xfe.jpg")  # what os.listdir gives on Linux
  assert safe_output.printable(name) == "dir/bad\\xff\\xfe.jpg"
  assert safe_output.printable(b"bad\xff.jpg") == "bad\\xff.jpg"  # bytes, e.g. from TensorFlow
  assert safe_output.printable("caf\u00e9 \u7167\u7247.jpg") == "caf\u00e9 \u7167\u7247.jpg"
  assert safe_output.printable("lone \ud800") == "lone \\ud800"
  assert safe_output.json_dumps({"image": name}) == '{"image": "dir/bad\\\\xff\\\\xfe.jpg"}'
  row = io.StringIO()
  writer = result_files.ResultWriter(row, "csv", result_files.csv_columns("distribution", 2))
  writer.write({"image": name, "score": -1.25, "distribution": [0.25, 0.75]})
  assert list(csv.reader(io.StringIO(row.getvalue())))[1] == [
      "dir/bad\\xff\\xfe.jpg", "-1.25", "0.25", "0.75", ""]
  table = cross_dataset.table({name: {"livec:full": {"srcc": 0.5}}}, ["livec:full"])
  assert "| dir/bad\\xff\\xfe.jpg | SRCC | 0.500 |" in table
  table.encode("utf-8")


def test_predict_csv_neutralises_file_names_and_keeps_the_scores(tmp_path, monkeypatch, capsys,
                                                                small_npz):
  monkeypatch.chdir(tmp_path)
  for seed, name in enumerate(FORMULA_NAMES + ("plain.jpg",)):
    _image(tmp_path / name, seed)
  (tmp_path / "list.txt").write_text("".join(f"{name}\n" for name in FORMULA_NAMES)
                                     + "plain.jpg\n", encoding="utf-8")
  assert predict.main(["--quiet", "--checkpoint", small_npz, "--list", "list.txt"]) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [line["image"] for line in lines] == list(FORMULA_NAMES) + ["plain.jpg"]  # JSON: as is
  assert predict.main(["--quiet", "--checkpoint", small_npz, "--list", "list.txt",
                       "--format", "csv", "--output", "scores.csv"]) == 0
  with open(tmp_path / "scores.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [row["image"] for row in rows] == ["'" + n for n in FORMULA_NAMES] + ["plain.jpg"]
  for row, line in zip(rows, lines):
    assert float(row["score"]) == line["score"] and row["error"] == ""


def test_a_name_that_is_not_utf8_is_scored_and_written_escaped(tmp_path, capsys, small_npz):
  folder = tmp_path / "photos"
  folder.mkdir()
  _image(folder / "ok.png")
  with open(os.path.join(os.fsencode(folder), b"bad\xff.png"), "wb") as f:
    _image(f, seed=1)
  assert predict.main(["--quiet", "--checkpoint", small_npz, str(folder)]) == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  score = {os.path.basename(line["image"]): line["score"] for line in lines}
  assert sorted(score) == ["bad\\xff.png", "ok.png"] and len(lines) == 2
  for kind in ("jsonl", "csv"):
    out = tmp_path / f"scores.{kind}"
    assert predict.main(["--quiet", "--checkpoint", small_npz, "--format", kind,
                         "--output", str(out), str(folder)]) == 0
    text = out.read_bytes().decode("utf-8")  # strict: the whole file is valid UTF-8
    rows = ([json.loads(line) for line in text.splitlines()] if kind == "jsonl"
            else list(csv.DictReader(io.StringIO(text))))
    assert sorted(os.path.basename(row["image"]) for row in rows) == sorted(score)
    for row in rows:
      assert float(row["score"]) == score[os.path.basename(row["image"])]
  # A list file with that name in it: read, scored, escaped; nothing is lost for one line.
  listing = tmp_path / "list.txt"
  listing.write_bytes(os.fsencode(folder) + b"/bad\xff.png\n" + os.fsencode(folder) + b"/ok.png\n")
  assert predict.main(["--quiet", "--checkpoint", small_npz, "--list", str(listing)]) == 0
  listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [os.path.basename(line["image"]) for line in listed] == ["bad\\xff.png", "ok.png"]
  assert all("score" in line for line in listed)


def test_metrics_json_is_strict_json_with_null_for_an_undefined_metric(tmp_path):
  nan = float("nan")
  scores = {"srcc": nan, "plcc": float("inf"), "rmse": 0.5, "srcc_ci95_low": nan}
  out = tmp_path / "eval"
  columns = {"name": ["=cmd|' /C calc'!A0.png", "b\udcff.png"], "target": np.array([-3.5, 2.0]),
             "prediction": np.array([nan, -0.25])}
  report.write_outputs(str(out), scores, columns)
  written = _strict_json((out / "metrics.json").read_text(encoding="utf-8"))
  assert written == {"srcc": None, "plcc": None, "rmse": 0.5, "srcc_ci95_low": None}
  with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  assert rows[1:] == [["0", "'=cmd|' /C calc'!A0.png", "-3.5", "nan"],
                      ["1", "b\\xff.png", "2", "-0.25"]]
  # One run: the standard deviation is undefined.
  report.write_runs_summary(str(out), ["run/a"], report.aggregate([{"srcc": 0.5}]))
  assert _strict_json((out / "runs_metrics.json").read_text()) == {
      "runs": ["run/a"], "mean_std": {"srcc": [0.5, None]}}
  cross_dataset.write_table(str(out), {"a.npz": {"livec:full": {"srcc": nan, "plcc": 0.5}}},
                            ["livec:full"], {"livec:full": 3})
  table = _strict_json((out / "cross_dataset.json").read_text())
  assert table["results"]["a.npz"]["livec:full"] == {"srcc": None, "plcc": 0.5}
  # What mst-train writes as <split>_metrics.json: a collapsed model's metrics.
  collapsed = metrics.quality_metrics(np.full(8, 3.0), np.arange(8.0))
  assert math.isnan(collapsed["srcc"])
  assert _strict_json(safe_output.json_dumps(collapsed, indent=2))["srcc"] is None
  with pytest.raises(ValueError, match="NaN is not JSON"):
    _strict_json(json.dumps(collapsed))  # the check can fail: what plain json.dumps writes


def test_sweep_tables_read_a_null_metric_as_undefined(tmp_path):
  from experiments import collect  # pylint: disable=g-import-not-at-top
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text("{}")
  (tmp_path / "run" / "test_metrics.json").write_text(
      safe_output.json_dumps({"srcc": float("nan"), "plcc": 0.5}))
  assert collect.report(str(tmp_path)).splitlines()[2] == "| run | 1 | nan | 0.500 |"


def _result(dataset, target, prediction, worst=()):
  scores = metrics.quality_metrics(prediction, target)
  for key, _ in report.CORRELATIONS:
    scores[f"{key}_ci95_low"], scores[f"{key}_ci95_high"] = metrics.bootstrap_ci(
        getattr(metrics, key), prediction, target, samples=20)
  return html_report.DatasetResult(dataset, scores, target, prediction, worst)


def test_report_html_renders_constant_and_non_finite_results_and_says_what_is_undefined(tmp_path):
  target = np.linspace(1.0, 5.0, 20)
  nan_mos = target.copy()
  nan_mos[4] = np.nan
  with_inf = target * 10
  with_inf[7] = np.inf
  worst = [html_report.WorstImage("bad\udcff.png", 1.0, 3.0, np.zeros((8, 8, 3), np.uint8))]
  runs = [html_report.RunResult("constant", [_result("a:test", target, np.full(20, 3.0), worst),
                                             _result("b:test", nan_mos, target * 10)]),
          html_report.RunResult("broken", [_result("a:test", target, np.full(20, np.nan)),
                                           _result("b:test", target, with_inf)])]
  path = tmp_path / "report.html"
  html_report.write(str(path), runs, "hostile")
  page = path.read_bytes().decode("utf-8")  # strict: valid UTF-8 despite the name
  text = re.sub(r'src="data:[^"]+"', "", page)
  assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE)
  # Each of the 4 results in the table and in its section, and the mean row of both datasets.
  assert text.count("SRCC <b>undefined</b>") == 4 * 2 + 2
  assert text.count("SRCC <b>undefined</b> (defined in 0 of 2 runs)") == 2
  assert "Every prediction is 3: the correlations and the logistic fit are undefined." in text
  assert "1 of 20 images have a prediction or MOS that is not a finite number" in text
  assert "20 of 20 images" in text and "No plots: no image to draw." in text
  assert "bad\\xff.png" in text
  # The drawable sections have their two plots; the all-NaN one none; the thumbnail.
  assert page.count('alt="prediction against MOS"') == 3 and page.count("<img ") == 3 * 2 + 1
