"""Image files from anywhere cost what an image is worth: decompression bombs are refused from
their headers before any pixel is decoded, only regular files are read (a FIFO, socket or device
is an error at once, never a wait), and reads stop at the file's size."""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from mst.data import image_io


def _chunk(kind: bytes, payload: bytes) -> bytes:
  return (struct.pack(">I", len(payload)) + kind + payload
          + struct.pack(">I", zlib.crc32(kind + payload)))


def _png_bomb(path, side=20000):
  """A real greyscale PNG of side x side black pixels: a few hundred kB that inflate to side**2
  bytes (400 MB), and 1.2 GB as RGB."""
  compress = zlib.compressobj(9)
  row = bytes(side + 1)  # filter byte + pixels
  parts = [compress.compress(row * 500) for _ in range(side // 500)]
  data = b"".join(parts) + compress.flush()
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n")
    f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)))
    f.write(_chunk(b"IDAT", data))
    f.write(_chunk(b"IEND", b""))
  return path


def _jpeg_bomb(path, side=30000):
  """A 64 x 64 JPEG whose frame header says side x side: a decoder that trusts it allocates
  side**2 * 3 bytes (2.7 GB) for a file of a few kB."""
  small = path.parent / "small_for_bomb.jpg"
  Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(small, "JPEG")
  data = bytearray(small.read_bytes())
  sof = data.index(b"\xff\xc0")  # baseline frame: marker, length, precision, height, width
  data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
  path.write_bytes(bytes(data))
  return path


@pytest.fixture(name="bombs", scope="module")
def fixture_bombs(tmp_path_factory):
  folder = tmp_path_factory.mktemp("bombs")
  return _png_bomb(folder / "bomb.png"), _jpeg_bomb(folder / "bomb.jpg")


def _without_decoding(monkeypatch):
  """Makes any pixel decode fail the test: refusals must come from the header."""
  def decode(*_):
    raise AssertionError("pixels were decoded")
  monkeypatch.setattr(image_io, "_decode_without_tf", decode)
  monkeypatch.setattr(image_io, "_decode_with_tf", decode)


def test_bombs_are_refused_from_their_headers(bombs, monkeypatch):
  png, jpeg = bombs
  assert os.path.getsize(png) < 1_000_000 and os.path.getsize(jpeg) < 10_000
  _without_decoding(monkeypatch)
  with pytest.raises(image_io.ImageError, match=r"bomb\.png: 20000x20000 is 400 megapixels, more "
                     r"than the 89\.5 megapixels any image may have here"):
    image_io.read_image(str(png))
  with pytest.raises(image_io.ImageError, match=r"bomb\.jpg: 30000x30000 is 900 megapixels"):
    image_io.read_image(str(jpeg))


def test_the_callers_size_check_runs_before_decoding(tmp_path, monkeypatch):
  path = tmp_path / "photo.png"
  Image.fromarray(np.zeros((40, 70, 3), np.uint8)).save(path)
  seen = []
  def refuse(height, width):
    seen.append((height, width))
    raise image_io.ImageError("too many tokens")
  _without_decoding(monkeypatch)
  with pytest.raises(image_io.ImageError, match="too many tokens"):
    image_io.read_image(str(path), refuse)
  assert seen == [(40, 70)]


def _read_in_thread(path):
  """read_image(path) in a thread: (finished within 10 s, the error message or None)."""
  outcome = []
  def read():
    try:
      image_io.read_image(path)
      outcome.append(None)
    except image_io.ImageError as e:
      outcome.append(str(e))
  thread = threading.Thread(target=read, daemon=True)
  thread.start()
  thread.join(10)
  return bool(outcome), (outcome or [None])[0]


def test_special_files_and_links_to_them_are_refused_at_once(tmp_path):
  fifo = tmp_path / "fifo.jpg"
  os.mkfifo(fifo)
  sock = tmp_path / "socket.png"
  server = socket.socket(socket.AF_UNIX)
  server.bind(str(sock))
  (tmp_path / "zero.jpg").symlink_to("/dev/zero")
  try:
    for name, kind in [("fifo.jpg", "FIFO"), ("socket.png", "socket"),
                       ("zero.jpg", "character device")]:
      finished, error = _read_in_thread(str(tmp_path / name))
      assert finished, f"reading {name} blocked"
      assert error == f"{tmp_path / name}: not a regular file (a {kind}); only image files are read"
    finished, error = _read_in_thread("/dev/zero")
    assert finished and "character device" in error
  finally:
    server.close()


def test_reads_stop_at_the_size_the_file_had_and_at_the_cap(tmp_path, monkeypatch):
  path = tmp_path / "a.png"
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
  size = os.path.getsize(path)
  with pytest.raises(image_io.ImageError,
                     match=rf"a\.png: {size:,} bytes, more than the {size - 1:,} an image"):
    image_io.read_file(str(path), max_bytes=size - 1)
  # A file that grows after it was opened is read only up to the size it had then.
  real_fstat = os.fstat
  monkeypatch.setattr(os, "fstat", lambda fd: os.stat_result(
      tuple(real_fstat(fd))[:6] + (10,) + tuple(real_fstat(fd))[7:]))
  assert image_io.read_file(str(path)) == path.read_bytes()[:10]


def test_a_header_that_disagrees_with_the_pixels_is_an_error(tmp_path):
  path = tmp_path / "liar.bmp"
  Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(path)
  data = bytearray(path.read_bytes())
  data[18:22] = struct.pack("<i", 7)  # BITMAPINFOHEADER width: 9 -> 7, pixels unchanged
  path.write_bytes(bytes(data))
  with pytest.raises(image_io.ImageError, match=r"liar\.bmp: (decodes to|not a readable)"):
    image_io.read_image(str(path))


# mst-predict on a folder of hostile files and photos, its peak RSS printed by itself.
PREDICT = r"""
import resource, sys
from mst.cli import predict
status = predict.main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "STATUS", status)
"""


def _predict(checkpoint, folder):
  run = subprocess.run([sys.executable, "-c", PREDICT, "--checkpoint", str(checkpoint),
                        str(folder)], capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "MST_CACHE_DIR": "off"})
  *rows, summary = run.stdout.splitlines()
  _, peak_kb, _, status = summary.split()
  assert "Traceback" not in run.stderr, run.stderr[-3000:]
  return {os.path.basename(r["image"]): r for r in map(json.loads, rows)}, int(peak_kb), status


@pytest.mark.slow
def test_mst_predict_gives_every_file_a_row_in_bounded_memory(tmp_path, small_npz, bombs):
  clean = tmp_path / "clean"
  clean.mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), np.uint8)).save(clean / f"photo{i}.jpg")
  hostile = tmp_path / "hostile"
  hostile.mkdir()
  for name in os.listdir(clean):
    os.link(clean / name, hostile / name)
  for bomb in bombs:
    os.link(bomb, hostile / bomb.name)
  os.mkfifo(hostile / "fifo.jpg")
  (hostile / "zero.png").symlink_to("/dev/zero")

  clean_rows, clean_peak, clean_status = _predict(small_npz, clean)
  rows, peak, status = _predict(small_npz, hostile)
  assert clean_status == "0" and status == "1"  # some images failed
  assert sorted(rows) == ["bomb.jpg", "bomb.png", "fifo.jpg", "photo0.jpg", "photo1.jpg",
                          "photo2.jpg", "zero.png"]
  for name in clean_rows:
    assert rows[name]["score"] == pytest.approx(clean_rows[name]["score"], abs=1e-6)
  assert "not a regular file (a FIFO)" in rows["fifo.jpg"]["error"]
  assert "not a regular file (a character device)" in rows["zero.png"]["error"]
  assert "megapixels" in rows["bomb.jpg"]["error"] and "megapixels" in rows["bomb.png"]["error"]
  # The bombs would take 1.2 and 2.7 GB decoded; the run stays within 0.5 GB of a clean one.
  assert peak - clean_peak < 512 * 1024, (peak, clean_peak)


def test_dataset_builders_skip_a_bomb_from_its_header(bombs, monkeypatch):
  from mst.data.datasets import common  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  def decode_image(*_, **__):
    raise AssertionError("pixels were decoded")
  monkeypatch.setattr(tf.io, "decode_image", decode_image)
  for bomb, size in zip(bombs, ("20000x20000 is 400", "30000x30000 is 900")):
    image, reason = common.decode(bomb.read_bytes())
    assert image is None
    assert reason.startswith(f"too large: {size} megapixels, over the 89.5"), reason


def test_mst_visualize_checks_the_token_limit_before_decoding(small_npz, monkeypatch, tmp_path):
  from mst.visualization import rollout  # pylint: disable=g-import-not-at-top
  visualizer = rollout.Visualizer.from_checkpoint(str(small_npz), max_tokens=64)
  _without_decoding(monkeypatch)
  small = tmp_path / "small.png"
  Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(small)
  with pytest.raises(image_io.ImageError, match=r"small\.png: 400x300 makes \d+ tokens, more "
                     r"than --max-tokens 64"):
    visualizer.read_image(str(small))
