"""report.html: the images a model gets most wrong, a page that holds everything it shows (no
network), and that page opened in a real headless Chromium: it loads without console errors and
every image renders."""

import base64
import io
import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from mst.evaluation import html_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def test_worst_images_are_ranked_on_the_mos_scale_after_the_logistic_fit():
  target = np.linspace(1.0, 5.0, 20)
  prediction = 10.0 * target  # another scale: raw differences would rank the high scores worst
  prediction[3] += 15.0  # 1.5 MOS units too high
  prediction[10] -= 8.0  # 0.8 too low
  assert list(html_report.worst_indices(target, prediction, count=2)) == [3, 10]
  assert len(html_report.worst_indices(target, prediction)) == 12


def test_without_a_logistic_fit_the_raw_differences_rank_the_images():
  # Four images are too few to fit: |MOS - prediction| = 0.5, 0, 3, 0.
  assert list(html_report.worst_indices([1, 2, 3, 4], [1.5, 2, 0, 4], count=2)) == [2, 0]
  # Constant predictions cannot be fitted: errors 2, 1, 0, 1, 2, 3; ties keep their order.
  assert list(html_report.worst_indices(np.arange(1.0, 7.0), np.full(6, 3.0))) == [
      5, 0, 4, 1, 3, 2]


def _result(dataset, seed, worst=12, rollout=True):
  rng = np.random.default_rng(seed)
  target = rng.uniform(1, 5, 40)
  prediction = 20 * target + rng.normal(0, 8, 40)
  images = [html_report.WorstImage(
      f"img{i}.png", float(target[i]), float(prediction[i]),
      rng.integers(0, 256, (30 + i, 50, 3), dtype=np.uint8),
      rng.uniform(0, 1, (30 + i, 50)) if rollout else None) for i in range(worst)]
  scores = {"srcc": 0.81234, "srcc_ci95_low": 0.7, "srcc_ci95_high": 0.9, "plcc": 0.8 + seed / 100,
            "krcc": 0.6}
  return html_report.DatasetResult(dataset, scores, target, prediction, images)


def _runs():
  return [html_report.RunResult("runs/a<script>", [_result("livec:full", 1),
                                                    _result("kadid10k:full", 2, rollout=False)]),
          html_report.RunResult("runs/b", [_result("livec:full", 3, worst=0)])]


def _images(page):
  return re.findall(r'<img src="data:(image/[a-z]+);base64,([^"]+)"', page)


def test_the_page_holds_metrics_plots_and_worst_images_and_nothing_external():
  page = html_report.render(_runs(), "cross")
  # Plots: 2 per dataset section (3); thumbnails: 12 + 12 rollouts, 12 without rollout.
  images = _images(page)
  assert len(images) == 3 * 2 + 12 * 2 + 12 == page.count("<img ")
  for mime, data in images:
    decoded = Image.open(io.BytesIO(base64.b64decode(data)))
    assert decoded.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[mime]
    assert min(decoded.size) > 10
  assert "http://" not in page and "https://" not in page and "<script" not in page
  assert "runs/a&lt;script&gt;" in page  # names are escaped
  assert "SRCC <b>0.812</b> <span class=ci>[0.700, 0.900]</span>" in page
  assert "mean ± std of 2 runs" in page and "PLCC <b>0.820</b> ± 0.014" in page
  assert "higher is better" in page
  assert page.count("attention rollout\"") == 12
  # The header names every dataset; the table has a column per dataset and a row per checkpoint,
  # and each run's dataset has its own section.
  assert "<h1>cross</h1>" in page and re.search(
      r"<p class=meta>\d{4}-\d\d-\d\d \d\d:\d\d UTC · checkpoints: runs/a&lt;script&gt;, runs/b · "
      r"datasets: livec:full, kadid10k:full</p>", page)
  table = page[page.index("<table"):page.index("</table>")]
  assert "<th>livec:full</th><th>kadid10k:full</th>" in table
  assert table.count("<th class=run>runs/") == 2
  assert re.findall(r"<h2>(\S+) <span class=run-name>([^<]+)</span>", page) == [
      ("livec:full", "runs/a&lt;script&gt;"), ("kadid10k:full", "runs/a&lt;script&gt;"),
      ("livec:full", "runs/b")]


def test_a_large_dataset_renders_quickly_into_a_small_page():
  rng = np.random.default_rng(0)
  target = rng.uniform(0, 100, 20_000)
  result = html_report.DatasetResult("koniq:test", {"srcc": 0.9}, target,
                                     target + rng.normal(0, 10, target.size))
  start = time.perf_counter()
  page = html_report.render([html_report.RunResult("c.npz", [result])])
  assert time.perf_counter() - start < 20  # ~0.5 s alone; the dots are one raster image
  assert len(page) < 600_000 and len(_images(page)) == 2


class _FailingVisualizer:
  def attention_maps(self, image, name):
    raise ValueError(f"{name}: too many tokens")


def test_a_rollout_that_fails_leaves_the_image_without_one():
  assert html_report.visualizer(None) is None
  assert html_report.visualizer("/nonexistent/model.npz") is None
  image = np.zeros((8, 8, 3), np.uint8)
  assert html_report._rollout(_FailingVisualizer(), image, "a.png") is None


def test_a_classifier_gets_its_accuracy_without_plots():
  result = html_report.DatasetResult("imagenet:validation", {"accuracy": 0.75},
                                     np.zeros(4), np.zeros(4))
  page = html_report.render([html_report.RunResult("c.npz", [result])])
  assert "accuracy 0.7500" in page and "<img" not in page


def test_write_replaces_the_file_atomically(tmp_path):
  path = tmp_path / "out" / "report.html"
  html_report.write(str(path), _runs()[1:])
  html_report.write(str(path), _runs()[1:])
  assert path.read_text().startswith("<!DOCTYPE html>") and os.listdir(path.parent) == [
      "report.html"]


def browser() -> str | None:
  return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


# Appended to a copy of the page: after loading, writes how many images there are, how many did
# not decode, and the errors the page raised, where --dump-dom prints them.
CHECKER = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(img => !img.complete || img.naturalWidth === 0).length;
  const out = document.createElement("div");
  out.id = "mst-check";
  out.dataset.images = images.length;
  out.dataset.broken = broken;
  document.body.appendChild(out);
});
</script>"""


def _chromium(binary, path, *flags):
  return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                         "--enable-logging=stderr", "--v=0", *flags, f"file://{path}"],
                        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(browser() is None, reason="no Chromium: apt-get install chromium "
                    "(.ci/run installs it)")
def test_the_page_loads_in_chromium_without_errors_and_every_image_renders(tmp_path):
  page = html_report.render(_runs(), "cross")
  path = tmp_path / "report.html"
  path.write_text(page)
  checked = tmp_path / "checked.html"
  checked.write_text(page.replace("</body>", CHECKER + "</body>"))
  done = _chromium(browser(), checked, "--virtual-time-budget=10000", "--dump-dom")
  found = re.search(r'id="mst-check" data-images="(\d+)" data-broken="(\d+)"', done.stdout)
  assert found, done.stdout[-2000:] + done.stderr[-2000:]
  assert (int(found[1]), int(found[2])) == (len(_images(page)), 0)
  # The page itself, as written: nothing it logs to the console.
  done = _chromium(browser(), path, "--virtual-time-budget=10000", "--dump-dom")
  console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
  assert not console, console
  assert "<h1>cross</h1>" in done.stdout
  # The checks can fail: a broken image and a script error are caught.
  bad = tmp_path / "bad.html"
  bad.write_text('<html><body><img src="data:image/png;base64,AAAA"><script>missing()</script>'
                 + CHECKER + "</body></html>")
  done = _chromium(browser(), bad, "--virtual-time-budget=10000", "--dump-dom")
  assert 'data-images="1" data-broken="1"' in done.stdout
  assert any("CONSOLE" in line and "missing" in line for line in done.stderr.splitlines())


@pytest.mark.experiments
@pytest.mark.skipif(browser() is None, reason="no Chromium: apt-get install chromium "
                    "(.ci/run installs it)")
def test_the_readme_screenshot_is_the_top_of_the_page_in_256_colours(tmp_path):
  from experiments import report_screenshot  # pylint: disable=g-import-not-at-top
  page, png = tmp_path / "report.html", tmp_path / "shot.png"
  html_report.write(str(page), _runs(), "cross")
  report_screenshot.screenshot(str(page), str(png))
  shot = Image.open(png)
  assert shot.size == (report_screenshot.WIDTH, report_screenshot.HEIGHT) and shot.mode == "P"
  # Not a blank page: the white background, dark text and the coloured thumbnails.
  assert len(shot.getcolors(256)) > 50
