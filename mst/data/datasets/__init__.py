"""tfds builders for the MUSIQ datasets and your own data, built from original downloads.

Importing this package registers `koniq10k`, `spaq`, `ava`, `paq2piq`, the IQA papers' evaluation
sets `livec`, `kadid10k`, `tid2013`, `live` and `csiq` (splits `full`, `train`, `test`; configs
`seed_<n>`), `custom` and `demo` (the bundled demo set, generated locally) with tfds, so both of
these work offline (nothing is fetched while building or loading):

    import mst.data.datasets
    mst.data.datasets.build("koniq10k", data_dir, manual_dir="/data/koniq")   # prepared builder
    tfds.builder("koniq10k", data_dir=D).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=M))

    mst-datasets build koniq10k --manual-dir M --data-dir D
    mst-datasets build custom --data-dir D \
        --config '{"csv": "/path/labels.csv", "image_dir": "/path/images"}'

A new dataset is one builder module here plus one entry in `DATASETS`: configs
(`config.dataset.name`), `mst-datasets` and its `--help` take the names from that dict.

Every example holds `image` (the encoded file's bytes, unchanged), `name`, `mos` (on the dataset's
own scale, see each builder's description) and the dataset's other labels; images that are missing
or cannot be decoded are listed in `skipped_images.txt` beside the prepared data (`read_skipped`).
"""

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from mst.data.datasets import ava
from mst.data.datasets.common import read_skipped
from mst.data.datasets.common import SKIPPED_FILE
from mst.data.datasets import csiq
from mst.data.datasets import custom
from mst.data.datasets import demo
from mst.data.datasets import kadid10k
from mst.data.datasets import koniq10k
from mst.data.datasets import live
from mst.data.datasets import livec
from mst.data.datasets import paq2piq
from mst.data.datasets import spaq
from mst.data.datasets import tid2013

DATASETS = {
    "koniq10k": koniq10k.Koniq10k,
    "spaq": spaq.Spaq,
    "ava": ava.Ava,
    "paq2piq": paq2piq.Paq2piq,
    "livec": livec.Livec,
    "kadid10k": kadid10k.Kadid10k,
    "tid2013": tid2013.Tid2013,
    "live": live.Live,
    "csiq": csiq.Csiq,
    "custom": custom.Custom,
    "demo": demo.Demo,
}

__all__ = ["DATASETS", "build", "declared_splits", "read_skipped", "SKIPPED_FILE"]


def declared_splits(name: str) -> tuple[str, ...] | None:
  """The splits dataset `name` (optionally "name/config") can have, read from its builder class
  without preparing anything; None for a dataset of tfds's own catalogue."""
  cls = DATASETS.get(name.partition("/")[0])
  return None if cls is None else tuple(cls.SPLITS)


def build(name: str, data_dir: str, manual_dir: str | None = None, overwrite: bool = False,
          **kwargs) -> tfds.core.DatasetBuilder:
  """The builder of dataset `name` under `data_dir`, prepared from `manual_dir` if not yet.

  `name` may carry a config (`"spaq/shorter_side_512"`). kwargs: `config` (a config name or
  object); for `custom`: `csv`, `image_dir` (default: the CSV's folder) and `split_seed`; for
  the IQA evaluation sets (`kadid10k`, ...): `split_seed` (or the config `seed_<n>`).
  A dataset that is already prepared needs no manual dir; one that is not fails fast without it.
  `overwrite` deletes a prepared version first and prepares it again. Nothing is fetched from the
  network (GCS lookups are off).
  """
  name, _, config_name = name.partition("/")
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
  cls = DATASETS[name]
  if config_name:
    if "config" in kwargs:
      raise ValueError(f"config given twice: {config_name!r} and {kwargs['config']!r}")
    kwargs["config"] = config_name
  builder_config = cls.config_from_kwargs(**kwargs)
  builder = cls(data_dir=data_dir, config=builder_config)
  if overwrite and builder.is_prepared():
    tf.io.gfile.rmtree(os.fspath(builder.data_dir))
    builder = cls(data_dir=data_dir, config=builder_config)  # sees the version as unprepared
  if builder.is_prepared():
    return builder
  if builder.needs_manual_dir and not (manual_dir and os.path.isdir(manual_dir)):
    raise FileNotFoundError(
        f"{name} is not prepared in {data_dir} and the manual dir {manual_dir!r} is not a folder."
        f"\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  tfds.display_progress_bar(False)  # preparation reports its own progress (mst.runtime.progress)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder
