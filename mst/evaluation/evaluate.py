"""Evaluation of a model on a dataset split: every example exactly once, at native resolution with
all patches, on any number of devices and hosts, with metrics on the gathered predictions.
`Evaluator` runs during training; `evaluate_checkpoint` is `mst-eval`'s whole job for one file.
"""

import dataclasses

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import tensorflow_datasets as tfds

from mst.checkpoints import loader
from mst.data import pipeline
from mst.data import multiscale
from mst.evaluation import metrics
from mst.scoring import inference
from mst.models import musiq
from mst.runtime import progress
from mst.runtime import safe_output
from mst.runtime import sharding

CI_METRICS = ("srcc", "plcc", "krcc")
SELECT = ("best", "last")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """`config.eval`: the global batch, bootstrap samples for confidence intervals (0 = off),
  AVA's binary accuracy, and which parameters the reported test metrics use: those of the best
  evaluation of the validation split ("best") or of the last step ("last"). No defaults:
  mst.config.defaults holds them."""
  batch_size: int
  bootstrap_samples: int
  ava_metrics: bool
  select: str

  def __post_init__(self):
    if self.select not in SELECT:
      raise ValueError(f"eval.select={self.select!r} is not one of {SELECT}")


@dataclasses.dataclass
class Predictions:
  """Per-example outputs in split order: `prediction`, the score (on the dataset's MOS scale) or
  the class, and `target`, the example's `mos` or `label`."""
  prediction: np.ndarray
  target: np.ndarray


def predict_fn(model: musiq.Musiq, head: str, mos_scale: float):
  """(params, batch) -> what evaluation keeps of each example."""
  def predict(params, batch):
    result = inference.outputs(model.apply({"params": params}, batch), head, mos_scale)
    out = {"index": batch["index"], "valid": batch["valid"]}
    if head == "classification":
      out["prediction"], out["target"] = result["class"], batch["label"]
    else:
      out["prediction"], out["target"] = result["score"], batch["mos"]
    return out
  return predict


def predict_step(model: musiq.Musiq, head: str, mos_scale: float, mesh):
  """`predict_fn` jitted as evaluation runs it: replicated parameters, the batch as it comes
  (split over `mesh`), the outputs replicated for every host to read."""
  return jax.jit(predict_fn(model, head, mos_scale), out_shardings=sharding.replicated(mesh))


class Evaluator:
  """Scores one split again and again (e.g. after each training interval) with a fixed plan."""

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str, *, model: musiq.Musiq,
               pp_config: multiscale.MultiScaleConfig, batch_size: int, mesh,
               mos_scale: float = 1.0, ava_metrics: bool = False):
    host = pipeline.Host(jax.process_index(), jax.process_count())
    self.builder, self.split, self.pp_config = builder, split, pp_config
    self.local_batch = batch_size // host.count
    self.num_examples = builder.info.splits[split].num_examples
    sizes = pipeline.image_sizes(builder, split)
    self.plan = pipeline.eval_plan(sizes, pp_config, self.local_batch, host)
    self.head = model.config.head
    self.ava_metrics = ava_metrics
    self.data_sharding = sharding.data_sharding(mesh)
    self._predict = predict_step(model, self.head, mos_scale, mesh)

  def predictions(self, params) -> Predictions:
    """Every example's prediction and target, identical on every host."""
    prediction = np.full(self.num_examples, np.nan)
    target = np.full(self.num_examples, np.nan)
    seen = np.zeros(self.num_examples, bool)
    data = pipeline.eval_dataset(self.builder, self.split, batch_size=self.local_batch,
                                       pp_config=self.pp_config, plan=self.plan)
    bar = progress.Progress(f"eval {self.split}", self.num_examples, "examples",
                            enabled=jax.process_index() == 0)
    for local in data.as_numpy_iterator():
      out = self._predict(params, pipeline.to_global_arrays(local, self.data_sharding))
      out = jax.tree.map(np.asarray, multihost_utils.process_allgather(out, tiled=True))
      index = out["index"][out["valid"]]
      if seen[index].any():
        raise AssertionError(f"examples {index[seen[index]]} of {self.split} evaluated twice")
      seen[index] = True
      prediction[index] = out["prediction"][out["valid"]]
      target[index] = out["target"][out["valid"]]
      bar.update(len(index))
    bar.close()
    if not seen.all():
      raise AssertionError(f"{(~seen).sum()} examples of {self.split} were not evaluated")
    return Predictions(prediction, target)

  def __call__(self, params) -> dict[str, float]:
    """The split's metrics under `params` (see `scores`)."""
    return self.scores(self.predictions(params))

  def scores(self, result: Predictions) -> dict[str, float]:
    """SRCC, PLCC, KRCC, RMSE (AVA adds accuracy and MSE), or a classifier's accuracy."""
    if self.head == "classification":
      return {"accuracy": float(np.mean(result.prediction == result.target))}
    return metrics.quality_metrics(result.prediction, result.target, ava=self.ava_metrics)


def scale_mismatch(prediction: np.ndarray, target: np.ndarray) -> str | None:
  """A warning when predictions and targets look like different scales (their middle halves lie
  more than a whole target range apart: 0-100 scores against 1-5 labels, say), else None.
  RMSE and the logistic fit only mean something on one scale."""
  low, high = np.nanpercentile(prediction, [25, 75])
  t_low, t_high = np.nanpercentile(target, [25, 75])
  span = max(float(np.nanmax(target) - np.nanmin(target)), 1e-6)
  if low > t_high + span or high < t_low - span:
    return (f"predictions (middle half {low:.3g} to {high:.3g}) and targets ({t_low:.3g} to "
            f"{t_high:.3g}) look like different scales: is the checkpoint trained on this "
            "dataset's labels (config.dataset.mos_scale, the dataset's `mos`)?")
  return None


def example_names(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
  """The file name of each example, in split order (the order of evaluation indices): mst's
  builders call it `name`, tfds's catalogue `file_name`; else the position. A name that is not
  UTF-8 is escaped (`safe_output.printable`), not an error."""
  features = builder.info.features
  key = next((k for k in ("name", "file_name") if k in features), None)
  if key is None:
    return [str(i) for i in range(builder.info.splits[split].num_examples)]
  names = pipeline.feature(pipeline.read_split(builder, split, pipeline.Host()), key)
  return [safe_output.printable(name) for name in names.as_numpy_iterator()]


def evaluate_checkpoint(settings: EvalSettings, path: str, split: str,
                        builder: tfds.core.DatasetBuilder, mesh, dtype: str = "float32",
                        seed: int = 0) -> tuple[dict[str, float], dict[str, list]]:
  """(metrics with bootstrap confidence intervals, seeded by `seed`, and per-example columns
  `name`, `target`, `prediction`) of one checkpoint (an official `.npz` or a workdir) on
  `split`."""
  loaded = loader.load_for_inference(path, dtype=dtype)
  return evaluate_loaded(settings, loaded, split, builder, mesh, seed=seed, name=path)


def evaluate_loaded(settings: EvalSettings, loaded: loader.Loaded, split: str,
                    builder: tfds.core.DatasetBuilder, mesh, seed: int = 0, name: str = "",
                    warn_scale: bool = True) -> tuple[dict[str, float], dict[str, list]]:
  """`evaluate_checkpoint` of a loaded checkpoint (`name` in its warnings), so one checkpoint is
  read once for many datasets. `warn_scale` False: predictions on another scale than the labels
  are expected (a checkpoint tested on other datasets), so no warning."""
  evaluator = Evaluator(
      builder, split, model=musiq.Musiq(loaded.model_config), pp_config=loaded.pp_config,
      batch_size=settings.batch_size, mesh=mesh, mos_scale=loaded.mos_scale,
      ava_metrics=settings.ava_metrics)
  result = evaluator.predictions(jax.device_put(loaded.params))
  scores = evaluator.scores(result)
  warning = (warn_scale and loaded.model_config.head != "classification" and
             scale_mismatch(result.prediction, result.target))
  if warning:
    logging.warning("%s on %s: %s", name, split, warning)
  if loaded.model_config.head != "classification" and settings.bootstrap_samples:
    for metric in CI_METRICS:
      low, high = metrics.bootstrap_ci(getattr(metrics, metric), result.prediction,
                                       result.target, samples=settings.bootstrap_samples,
                                       seed=seed)
      scores[f"{metric}_ci95_low"], scores[f"{metric}_ci95_high"] = low, high
  columns = {"name": example_names(builder, split), "target": result.target,
             "prediction": result.prediction}
  return scores, columns
