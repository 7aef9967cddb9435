"""Evaluation of a model on a dataset split: every example exactly once, at native resolution with
all patches, on any number of devices and hosts, with metrics on the gathered predictions.
"""

import dataclasses

import jax
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from mst import input_pipeline
from mst import metrics
from mst import preprocess
from mst import sharding
from mst.models import musiq


@dataclasses.dataclass
class Predictions:
  """Per-example outputs in split order: `score` (on the dataset's MOS scale) or `label` (class),
  and the example's `mos` or `label` target."""
  prediction: np.ndarray
  target: np.ndarray


def predict_fn(model: musiq.Musiq, head: str, mos_scale: float):
  """(params, batch) -> what evaluation keeps of each example."""
  def predict(params, batch):
    logits = model.apply({"params": params}, batch)
    out = {"index": batch["index"], "valid": batch["valid"]}
    if head == "classification":
      out["prediction"] = logits.argmax(-1)
      out["target"] = batch["label"]
    else:
      out["prediction"] = musiq.scores(logits, head) * mos_scale
      out["target"] = batch["mos"]
    return out
  return predict


class Evaluator:
  """Scores one split again and again (e.g. after each training interval) with a fixed plan."""

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str, *, model: musiq.Musiq,
               pp_config: preprocess.MultiScaleConfig, batch_size: int, mesh,
               mos_scale: float = 1.0, ava_metrics: bool = False):
    host = input_pipeline.Host(jax.process_index(), jax.process_count())
    if batch_size % jax.device_count():
      raise ValueError(f"eval.batch_size={batch_size} must be a multiple of the "
                       f"{jax.device_count()} devices")
    self.builder, self.split, self.pp_config = builder, split, pp_config
    self.local_batch = batch_size // host.count
    self.num_examples = builder.info.splits[split].num_examples
    sizes = input_pipeline.image_sizes(builder, split)
    self.plan = input_pipeline.eval_plan(sizes, pp_config, self.local_batch, host)
    self.head = model.config.head
    self.ava_metrics = ava_metrics
    self.data_sharding = sharding.data_sharding(mesh)
    self._predict = jax.jit(predict_fn(model, self.head, mos_scale),
                            out_shardings=sharding.replicated(mesh))

  def predictions(self, params) -> Predictions:
    """Every example's prediction and target, identical on every host."""
    prediction = np.full(self.num_examples, np.nan)
    target = np.full(self.num_examples, np.nan)
    seen = np.zeros(self.num_examples, bool)
    data = input_pipeline.eval_dataset(self.builder, self.split, batch_size=self.local_batch,
                                       pp_config=self.pp_config, plan=self.plan)
    for local in data.as_numpy_iterator():
      out = self._predict(params, input_pipeline.to_global_arrays(local, self.data_sharding))
      out = jax.tree.map(np.asarray, multihost_utils.process_allgather(out, tiled=True))
      index = out["index"][out["valid"]]
      if seen[index].any():
        raise AssertionError(f"examples {index[seen[index]]} of {self.split} evaluated twice")
      seen[index] = True
      prediction[index] = out["prediction"][out["valid"]]
      target[index] = out["target"][out["valid"]]
    if not seen.all():
      raise AssertionError(f"{(~seen).sum()} examples of {self.split} were not evaluated")
    return Predictions(prediction, target)

  def __call__(self, params) -> dict[str, float]:
    """The split's metrics: SRCC, PLCC, KRCC, RMSE (AVA adds accuracy and MSE), or accuracy."""
    result = self.predictions(params)
    if self.head == "classification":
      return {"accuracy": float(np.mean(result.prediction == result.target))}
    return metrics.quality_metrics(result.prediction, result.target, ava=self.ava_metrics)
