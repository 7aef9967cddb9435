"""The output the README and docs/ show is the output the commands give: each block of shown
output is compared with what the code prints, its format and its scale included.

Which block each test checks (a ```text block is shown output; `test_every_output_block_is_checked`
keeps this list complete):
- README, "Score images with an official checkpoint": mst-predict's JSON lines.
- README, "Use it from Python": what the example prints.
- docs/evaluation.md, "What it looks like": mst-eval's cross-dataset table.
- docs/training.md, "Running a training": the progress line of a run.
- docs/reproducing.md, "Each result and its cost": experiments/flops.py's count.
The measured figures of docs/benchmarks.md (timings, one machine's rates) are exempt: each says
the command and the number of runs behind it.

A released checkpoint cannot be downloaded here, so the scoring tests write a small model in the
official `.npz` layout whose head is rescaled to give the two scores shown: the tests then check
that mst-predict and mst.load print the head's output as it is, on the checkpoint's own scale (a
KonIQ-10k file's 0-100: no division by 100, no rounding), in the shown format.
"""

import ast
import io
import json
import pathlib
import re
import shlex
import types

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import mst
from mst.checkpoints import npz
from mst.cli import predict
from mst.evaluation import cross_dataset
from mst.evaluation import report
from mst.runtime import progress
from mst.training import trainer
from support import REPO
from support.checkpoints import scoring_params
from support.readme_code import code_blocks
from support.readme_code import section

SCORING = "Score images with an official checkpoint"
# What the released KonIQ-10k model gives ordinary photos (docs/checkpoints.md, "What the released
# models predict"), on the 0-100 scale of the dataset's MOS: a shown score must look like one.
KONIQ_RANGE = (12, 75)
# Shown scores against the fitted fixture's: float32 arithmetic of the rescaled head.
SCORE_TOLERANCE = 1e-3


def _shown(file, heading):
  (block,) = code_blocks(file, heading, "text")
  return block.splitlines()


def _is_float32(value):
  """A float32 printed in full, as mst prints every score (float(np.float32) -> repr)."""
  return isinstance(value, float) and float(np.float32(value)) == value


@pytest.fixture(name="photos", scope="module")
def fixture_photos(tmp_path_factory):
  """The README's files (photo.jpg, holiday_photos/beach.png and a broken JPEG) and a
  `koniq_ckpt.npz` that scores the first two as the README shows."""
  root = tmp_path_factory.mktemp("readme_photos")
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(root / "photo.jpg")
  (root / "holiday_photos").mkdir()
  ramp = np.linspace(0, 255, 96 * 128 * 3).reshape(96, 128, 3).astype(np.uint8)
  Image.fromarray(ramp).save(root / "holiday_photos" / "beach.png")
  (root / "holiday_photos" / "broken.jpg").write_bytes((root / "photo.jpg").read_bytes()[:300])
  images = [str(root / "photo.jpg"), str(root / "holiday_photos" / "beach.png")]

  shown = [json.loads(line) for line in _shown("README.md", SCORING)]
  wanted = [row["score"] for row in shown[:2]]
  params = scoring_params()
  npz.export_official_npz(params, root / "raw.npz")
  raw = [mst.load(str(root / "raw.npz")).score(image) for image in images]
  assert abs(raw[0] - raw[1]) > 0.05, raw  # two different images, two different scores
  scale = (wanted[0] - wanted[1]) / (raw[0] - raw[1])
  head = params["head"]
  head["kernel"] = head["kernel"] * scale
  head["bias"] = head["bias"] * scale + (wanted[0] - scale * raw[0])
  npz.export_official_npz(params, root / "koniq_ckpt.npz")
  return root


def test_readme_mst_predict_lines_are_what_it_writes(photos, monkeypatch, capsys):
  (command,) = code_blocks("README.md", SCORING, "bash")
  argv = shlex.split(command)
  assert argv[0] == "mst-predict" and argv[-2] == ">", command
  monkeypatch.chdir(photos)
  assert predict.main(argv[1:-2] + ["--quiet"]) == 1  # the broken file's error line
  pathlib.Path(argv[-1]).write_text(capsys.readouterr().out)
  written = pathlib.Path(argv[-1]).read_text().splitlines()

  shown = _shown("README.md", SCORING)
  assert len(written) == len(shown)
  for shown_line, line in zip(shown, written):
    want, got = json.loads(shown_line), json.loads(line)
    assert list(got) == list(want) and got["image"] == want["image"]
    assert line == json.dumps(got)  # one JSON object per line, as json.dumps writes it
    if "score" in want:
      assert shown_line == json.dumps(want)
      assert _is_float32(want["score"]) and _is_float32(got["score"])
      assert got["score"] == pytest.approx(want["score"], abs=SCORE_TOLERANCE)
      assert KONIQ_RANGE[0] <= want["score"] <= KONIQ_RANGE[1]
    else:
      prefix, dots = want["error"].rsplit(" ", 1)
      assert dots == "..." and got["error"].startswith(prefix + " ")
  # The scale the README states for these lines.
  assert "KonIQ's, SPAQ's and\n  PaQ-2-PiQ's are on 0-100" in section("README.md", SCORING)


def test_readme_python_example_prints_what_it_shows(photos, monkeypatch, capsys):
  (example,) = code_blocks("README.md", "Use it from Python", "python")
  shown = _shown("README.md", "Use it from Python")
  monkeypatch.chdir(photos)
  exec(compile(example, "README.md", "exec"), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.splitlines()
  assert len(printed) == len(shown) == 3

  score, want = float(printed[0]), float(shown[0])
  assert printed[0] == repr(score) and shown[0] == repr(want)  # print(float) of a float32
  assert _is_float32(score) and _is_float32(want)
  assert score == pytest.approx(want, abs=SCORE_TOLERANCE)
  assert KONIQ_RANGE[0] <= want <= KONIQ_RANGE[1]
  for shown_line, line in zip(shown[1:], printed[1:]):
    want_row, row = ast.literal_eval(shown_line), ast.literal_eval(line)
    assert shown_line == repr(want_row) and line == repr(row)  # print(dict), quotes included
    assert list(row) == list(want_row) == ["image", "score"]
    assert row["image"] == want_row["image"]
    assert row["score"] == pytest.approx(want_row["score"], abs=SCORE_TOLERANCE)
  assert ast.literal_eval(printed[1])["score"] == pytest.approx(score, abs=1e-6)  # both ways

  # "the same scores as mst-predict"
  predict.main(["--quiet", "--checkpoint", "koniq_ckpt.npz", "photo.jpg",
                "holiday_photos/beach.png"])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [ast.literal_eval(line) for line in printed[1:]] == lines


def _markdown_table(text):
  """The first Markdown table in `text`, as its lines."""
  lines = text.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("|"))
  end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
  return lines[start:end]


def test_the_cross_dataset_table_is_mst_evals():
  shown = _markdown_table(section("docs/evaluation.md", "What it looks like"))
  labels = [cell.strip() for cell in shown[0].strip("|").split("|")][2:]
  keys = {title: key for key, title in report.CORRELATIONS}
  low, high = report.CI_SUFFIXES
  results, checkpoint = {}, None
  for line in shown[2:]:
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    checkpoint = cells[0] or checkpoint
    metric = keys[cells[1]]
    for label, cell in zip(labels, cells[2:]):
      value, lo, hi = map(float, re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", cell).groups())
      assert -1 <= lo <= value <= hi <= 1, cell  # a correlation inside its interval
      results.setdefault(checkpoint, {}).setdefault(label, {}).update(
          {metric: value, metric + low: lo, metric + high: hi})
  assert len(shown) == 2 + 3 * len(results)
  printed = cross_dataset.table(results, labels)
  table, caption = printed.split("\n\n", 1)
  assert table.splitlines() == shown
  text = section("docs/evaluation.md", "What it looks like")
  assert "what the brackets are" in text and "higher is better" in text
  assert "confidence intervals in brackets" in caption and "higher is better" in caption


def test_the_progress_line_is_the_trainers():
  text = section("docs/training.md", "Running a training")
  (shown,) = re.findall(r"`(train: \d+/\d+ steps[^`]*)`", text.replace("\n  ", " "))
  found = re.fullmatch(
      r"train: (\d+)/(\d+) steps \(100%\), ([\d.]+) steps/s, loss ([\d.]+), images/s ([\d.]+), "
      r"tokens/s (\d+), input wait (\d+)%", shown)
  assert found, shown
  done, total, rate, loss, images, tokens, wait = found.groups()
  assert done == total

  clock = types.SimpleNamespace(now=0.0)
  bar = progress.Progress("train", int(total), "steps", stream=io.StringIO(), every_s=1e9,
                          clock=lambda: clock.now)
  for _ in range(int(done)):
    bar.update()
  clock.now = int(done) / float(rate)
  written = {}
  meter = types.SimpleNamespace(scalars=lambda: {
      "images_per_second": float(images), "tokens_per_second": float(tokens),
      "input_wait_fraction": int(wait) / 100})
  out = types.SimpleNamespace(meter=meter, writer=types.SimpleNamespace(
      write_scalars=lambda step, scalars: written.update(scalars)))
  trainer._log_train(int(done), jnp.zeros(()), {"loss": float(loss)}, out, bar)  # pylint: disable=protected-access
  assert bar.line() == shown
  assert written["train/input_wait_fraction"] == pytest.approx(int(wait) / 100)


@pytest.mark.experiments
def test_the_compute_of_reproducing_the_paper_is_what_flops_py_counts():
  from experiments import flops  # pylint: disable=g-import-not-at-top
  text = section("docs/reproducing.md", "Each result and its cost")
  row = next(line for line in text.splitlines() if line.startswith("| KonIQ-10k |"))
  compute, minutes = re.search(r"\| ([\d,]+) PFLOP \| ([\d.]+) min \|$", row).groups()
  name, classes, images, epochs, test_images, native = flops.RUNS[1]
  assert name == "KonIQ-10k"
  train = flops.train_step_flops(classes)
  total = train * images * epochs + flops.forward_flops(classes, 49 + 144 + native) * test_images
  assert float(compute.replace(",", "")) == pytest.approx(total / 1e15, abs=0.5)
  assert float(minutes) == pytest.approx(total / (989e12 * 0.4) / 60, abs=0.05)
  prose = section("docs/reproducing.md", "How the compute was counted").replace("\n", " ")
  (count,) = re.findall(r"padded to it\): ([\d.]+) GFLOP", prose)
  assert float(count) == pytest.approx(train / 1e9, abs=0.05)


OUTPUT_BLOCKS_CHECKED = {
    ("README.md", SCORING): test_readme_mst_predict_lines_are_what_it_writes,
    ("README.md", "Use it from Python"): test_readme_python_example_prints_what_it_shows,
}
MEASURED = "docs/benchmarks.md"


def _headings_with_text_blocks(file):
  """(file, the nearest heading above) of every ```text block of `file`."""
  found, heading, in_code = [], None, False
  for line in (REPO / file).read_text().splitlines():
    if line.startswith("```"):
      if not in_code and line == "```text":
        found.append((file, heading))
      in_code = not in_code
    elif not in_code and re.match(r"#+ ", line):
      heading = line.lstrip("#").strip()
  return found


def test_every_output_block_is_checked():
  """Every ```text block (shown output) of the README and docs/ is checked by a test here, or is
  a measured figure in docs/benchmarks.md. A shown output outside a ```text block (a fence with
  no language) is not allowed, so that none escapes this check."""
  files = ["README.md"] + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))
  for file in files:
    text = (REPO / file).read_text()
    fences = re.findall(r"^```(.*)$", text, re.M)
    openings = fences[0::2]
    assert "" not in openings, f"{file}: a code block without a language (```text for output)"
    for where in _headings_with_text_blocks(file):
      assert where in OUTPUT_BLOCKS_CHECKED or file == MEASURED, (
          f"{where}: shown output that no test checks; check it in "
          "tests/system/docs_outputs_test.py or, if it is a measured figure, move it to "
          "docs/benchmarks.md with its command and runs")
  assert _headings_with_text_blocks(MEASURED)  # the measured figures are there
