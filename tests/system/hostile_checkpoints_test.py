"""Checkpoints from strangers: a hostile `.npz` (a header declaring terabytes, a deflate bomb, a
pickle, a wrong dtype, a truncated entry) is refused from its headers, in bounded memory, as an
`mst-<name>: error: ...` message with exit status 2, never a traceback; and a MemoryError in a
console script is one line of error too.

Each file is built from the small official-format checkpoint (`small_npz`, SMALL_MODEL's: a score
head of width 32) with some entries replaced by hand-written zip entries.
"""

import io
import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image
import pytest

from mst.checkpoints import npz
from mst.cli import exits
from mst.cli import predict
from mst.scoring import api
from support.checkpoints import RunsOnUnpickle

KERNEL = npz.OFFICIAL_PREFIX + "head/kernel.npy"  # (32, 1) float32 in SMALL_MODEL
BIAS = npz.OFFICIAL_PREFIX + "head/bias.npy"  # (1,) float32
TIB = 1 << 40
GIB = 1 << 30


def _npy_header(shape, dtype) -> bytes:
  """A valid .npy magic string and header declaring `shape` and `dtype`, with no data."""
  out = io.BytesIO()
  np.lib.format.write_array_header_1_0(out, {
      "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
      "shape": tuple(shape)})
  return out.getvalue()


def _npy(array) -> bytes:
  """`array` as np.save writes it (pickled, for object arrays)."""
  out = io.BytesIO()
  np.save(out, array, allow_pickle=True)
  return out.getvalue()


def _zeros_after(header: bytes, count: int):
  """Writes `header`, then `count` zero bytes 64 MiB at a time: gigabytes, never in memory."""
  chunk = memoryview(bytes(64 << 20))

  def write(f):
    f.write(header)
    for start in range(0, count, len(chunk)):
      f.write(chunk[:count - start])
  return write


def _rewrite(source, path, replaced, compression=zipfile.ZIP_STORED) -> str:
  """Copies the .npz `source` to `path` with the entries in `replaced` (name -> the entry's bytes,
  or a function writing them to the open entry) written with `compression`; returns `path`."""
  with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w", compression,
                                                       compresslevel=1) as new:
    for info in old.infolist():
      if info.filename not in replaced:
        new.writestr(info.filename, old.read(info), compress_type=zipfile.ZIP_STORED)
    for name, content in replaced.items():
      with new.open(name, "w", force_zip64=True) as f:
        if callable(content):
          content(f)
        else:
          f.write(content)
  return str(path)


def _corrupt_data(path, name) -> None:
  """Flips the last data byte of the stored entry `name`: reading its data fails the CRC check."""
  with zipfile.ZipFile(path) as archive:
    info = archive.getinfo(name)
  with open(path, "r+b") as f:
    f.seek(info.header_offset + 26)
    name_length, extra_length = struct.unpack("<HH", f.read(4))
    f.seek(info.header_offset + 30 + name_length + extra_length + info.compress_size - 1)
    last = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([last ^ 0xFF]))


def _load_error(path) -> str:
  with pytest.raises(npz.CheckpointError) as error:
    npz.load_official_npz(path)
  message = str(error.value)
  assert message.startswith(f"{path}: ")
  return message


# ---------------------------------------------------------------------------------------------
# The hostile files, and why each is refused (a phrase of the message).


def _header_of_4_tib(small_npz, tmp_path):
  """head/kernel's header declares 2**40 float32s (4 TiB); 8 bytes follow."""
  return _rewrite(small_npz, tmp_path / "4tib.npz",
                  {KERNEL: _npy_header((TIB,), np.float32) + bytes(8)})


def _truncated(small_npz, tmp_path):
  """head/bias declares one float32 and holds 2 of its 4 bytes (the zip's sizes agree)."""
  return _rewrite(small_npz, tmp_path / "truncated.npz",
                  {BIAS: _npy_header((1,), np.float32) + bytes(2)})


def _pickled(small_npz, tmp_path):
  """head/kernel is an object array whose unpickling would create `unpickled/`."""
  marker = str(tmp_path / "unpickled")
  return _rewrite(small_npz, tmp_path / "pickled.npz",
                  {KERNEL: _npy(np.array([RunsOnUnpickle(marker)], dtype=object))})


def _bzip2(small_npz, tmp_path):
  """head/bias compressed with bzip2, which zipfile inflates without bound in one read."""
  return _rewrite(small_npz, tmp_path / "bzip2.npz", {BIAS: _npy(np.zeros(1, np.float32))},
                  zipfile.ZIP_BZIP2)


def _all_zeros_compressed(small_npz, tmp_path):
  """Every parameter zero, deflated: megabytes of parameters from a file of kilobytes."""
  path = tmp_path / "zeros.npz"
  with np.load(small_npz) as archive, open(path, "wb") as f:
    np.savez_compressed(f, **{name: np.zeros_like(archive[name]) for name in archive.files})
  return str(path)


def _zero_size_with_a_huge_dimension(small_npz, tmp_path):
  """embedding/kernel declares (2**62, 0), no data: inferring the architecture from that header
  would count patch sizes up to 2**31 to find one that makes 2**62 rows."""
  return _rewrite(small_npz, tmp_path / "dimension.npz",
                  {npz.OFFICIAL_PREFIX + "embedding/kernel.npy": _npy_header((2**62, 0), "<f4")})


HOSTILE = {
    "header_of_4_tib": (_header_of_4_tib, "head/kernel: truncated: the header declares "
                        "(1099511627776,) float32, 4.0 TiB, the zip entry holds 8 B after it"),
    "truncated": (_truncated, "head/bias: truncated: the header declares (1,) float32, 4 B, the "
                  "zip entry holds 2 B after it"),
    "pickled": (_pickled, "head/kernel: holds Python objects (dtype object), refused unread"),
    "bzip2": (_bzip2, "head/bias: zip compression method 12: only stored and deflated entries"),
    "all_zeros_compressed": (_all_zeros_compressed, "refused unread as a zip bomb"),
    "zero_size_with_a_huge_dimension": (_zero_size_with_a_huge_dimension, "embedding/kernel: "
                                        "its .npy header declares the shape "
                                        "(4611686018427387904, 0): dimensions over 2147483647"),
}


def _numbered_up_to_a_billion(small_npz, tmp_path):
  """One more entry, of encoder block 999999999: before it was refused, the model's expected
  shapes were listed for a billion layers."""
  name = npz.OFFICIAL_PREFIX + "Transformer/encoderblock_999999999/LayerNorm_0/scale.npy"
  return _rewrite(small_npz, tmp_path / "layers.npz", {name: _npy(np.ones(32, np.float32))})


# What _numbered_up_to_a_billion's file is refused for (it took all memory before it was refused,
# so it is only loaded in a subprocess).
BILLION_LAYERS_PROBLEM = ("cannot infer the architecture (1):\n    encoder blocks numbered up to "
                          "999999999, more than the file's")


@pytest.fixture(scope="module")
def deflate_bombs(small_npz, tmp_path_factory):
  """Two deflated entries of zeros, 14 MB of file: head/kernel declares (2**29, 1) float32s
  (2 GiB) and holds them; head/bias declares one float32 and holds it, then 1 GiB of zeros."""
  path = tmp_path_factory.mktemp("bombs") / "bombs.npz"
  return _rewrite(small_npz, path, {
      KERNEL: _zeros_after(_npy_header((GIB // 2, 1), np.float32), 2 * GIB),
      BIAS: _zeros_after(_npy_header((1,), np.float32), 4 + GIB)}, zipfile.ZIP_DEFLATED)


BOMB_PROBLEMS = ("head/bias: longer than its .npy header says (a zip bomb?): the header declares "
                 "(1,) float32, 4 B, the zip entry holds 1.0 GiB after it",
                 "head/kernel: file (536870912, 1), model (32, 1)")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_is_refused_naming_the_entry_and_the_problem(small_npz, tmp_path, name):
  build, problem = HOSTILE[name]
  message = _load_error(build(small_npz, tmp_path))
  assert problem in message
  assert "missing keys" not in message  # an unreadable entry is reported once, as unreadable
  assert not os.path.exists(tmp_path / "unpickled")


@pytest.mark.slow  # builds 14 MB of deflated zeros (3 GiB inflated)
def test_deflate_bombs_are_refused_from_their_headers(deflate_bombs):
  with zipfile.ZipFile(deflate_bombs) as archive:
    assert archive.getinfo(KERNEL).file_size > 2 * GIB
  assert os.path.getsize(deflate_bombs) < 32 << 20
  message = _load_error(deflate_bombs)
  for problem in BOMB_PROBLEMS:
    assert problem in message


def test_a_wrong_dtype_is_refused_from_the_header_with_its_data_unread(small_npz, tmp_path):
  mlp = [f"Transformer/encoderblock_{i}/MlpBlock_0/Dense_0/kernel" for i in (0, 1)]  # (32, 64)
  entries = [npz.OFFICIAL_PREFIX + name + ".npy" for name in mlp]
  path = _rewrite(small_npz, tmp_path / "dtypes.npz", {
      entries[0]: _npy(np.full((32, 64), "text", "<U8")),
      entries[1]: _npy(np.ones((32, 64), np.complex64))})
  for entry in entries:  # past the first 4 KiB (read with the header): only reading it fails
    _corrupt_data(path, entry)
  message = _load_error(path)
  assert f"{mlp[0]}: file dtype <U8, model float32" in message
  assert f"{mlp[1]}: file dtype complex64, model float32" in message
  assert "CRC" not in message


def _photo(tmp_path) -> str:
  photo = str(tmp_path / "photo.png")
  Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(photo)
  return photo


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_mst_predict_refuses_a_hostile_file_without_a_traceback(small_npz, tmp_path, capsys, name):
  build, problem = HOSTILE[name]
  path = build(small_npz, tmp_path)
  assert predict.main(["--quiet", "--checkpoint", path, _photo(tmp_path)]) == exits.USAGE
  err = capsys.readouterr().err
  assert err.startswith(f"mst-predict: error: {path}: ")
  assert problem in err
  assert "Traceback" not in err


@pytest.mark.slow  # builds 14 MB of deflated zeros (3 GiB inflated)
def test_mst_predict_refuses_deflate_bombs(deflate_bombs, tmp_path, capsys):
  assert predict.main(["--quiet", "--checkpoint", deflate_bombs, _photo(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"mst-predict: error: {deflate_bombs}: ")
  assert all(problem in err for problem in BOMB_PROBLEMS)
  assert "Traceback" not in err


# A child process loads a valid file first (imports, JAX's start-up, tracing), then each hostile
# file with its address space capped at 1 GiB above what it has: it reports how much its peak
# resident memory grew, and each file's error (or "loaded").
_MEASURE = """
import json, resource, sys
from mst.checkpoints import npz

npz.load_official_npz(sys.argv[1])
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with open("/proc/self/statm") as f:
  mapped = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (mapped + (1 << 30), resource.RLIM_INFINITY))
before, errors = peak(), {}
for path in sys.argv[2:]:
  try:
    npz.load_official_npz(path)
    errors[path] = "loaded"
  except npz.CheckpointError as e:
    errors[path] = str(e)
print(json.dumps({"grew": peak() - before, "errors": errors}))
"""


@pytest.mark.slow
def test_hostile_files_are_refused_in_bounded_memory(small_npz, deflate_bombs, tmp_path):
  problems = {deflate_bombs: BOMB_PROBLEMS[0],
              _numbered_up_to_a_billion(small_npz, tmp_path): BILLION_LAYERS_PROBLEM}
  for build, problem in HOSTILE.values():
    problems[build(small_npz, tmp_path)] = problem
  env = dict(os.environ, MST_CACHE_DIR="off", JAX_PLATFORMS="cpu")
  child = subprocess.run([sys.executable, "-c", _MEASURE, small_npz, *problems], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
  assert child.returncode == 0, child.stderr[-3000:]
  report = json.loads(child.stdout.splitlines()[-1])
  assert report["grew"] < 64 << 20  # the bombs alone would take 3 GiB
  for path, problem in problems.items():
    assert report["errors"][path].startswith(f"{path}: "), report["errors"][path]
    assert problem in report["errors"][path]


# ---------------------------------------------------------------------------------------------
# MemoryError, wherever it comes from, is one line.


def test_a_memory_error_in_a_console_script_is_one_line(monkeypatch, tmp_path, capsys):
  def exhausted(*args, **kwargs):
    raise MemoryError("Unable to allocate 4.00 TiB for an array with shape (1099511627776,) and "
                      "data type float32")
  monkeypatch.setattr(api, "load", exhausted)
  assert predict.main(["--quiet", "--checkpoint", "any.npz", _photo(tmp_path)]) == exits.FAILED
  err = capsys.readouterr().err
  assert err.splitlines() == [
      "mst-predict: error: out of memory (Unable to allocate 4.00 TiB for an array with shape "
      "(1099511627776,) and data type float32): free some, or ask for less at once (e.g. a "
      "smaller batch size), then rerun"]


def test_a_bare_memory_error_is_one_line(capsys):
  def body(argv):
    raise MemoryError
  assert exits.run("mst-x", body, []) == exits.FAILED
  assert capsys.readouterr().err == (
      "mst-x: error: out of memory: free some, or ask for less at once (e.g. a smaller batch "
      "size), then rerun\n")
