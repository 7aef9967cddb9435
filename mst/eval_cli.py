"""`mst-eval`: evaluate a checkpoint (an mst workdir or an official .npz) on a dataset split.

    mst-eval --config configs/koniq.py --checkpoint koniq_ckpt.npz [--split test]
    mst-eval --config configs/koniq.py --runs runs/seed0 runs/seed1 ...   # mean and std of runs

Every example of the split is scored exactly once at native resolution with all patches (no
crops), on all devices of all hosts. Writes `predictions.csv` (one row per image) and
`metrics.json` (with bootstrap 95% confidence intervals) to the output directory and prints a
table. The dataset comes from the config (`--config.dataset.data_dir=...` etc. override it); the
model and its preprocessing come from the checkpoint.
"""

import csv
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from mst import checkpoint
from mst import evaluate
from mst import input_pipeline
from mst import metrics
from mst import sharding
from mst import training_data
from mst.models import musiq

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The dataset's config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("checkpoint", None, "An official .npz file or an mst-train workdir.")
flags.DEFINE_multi_string("runs", None, "mst-train workdirs of repeated runs to evaluate and "
                          "aggregate (mean, std); several may follow one --runs.")
flags.DEFINE_string("split", "test", "The split to evaluate.")
flags.DEFINE_string("output_dir", None, "Where predictions.csv and metrics.json go (default: "
                    "<workdir>/eval_<split>, or ./eval_<checkpoint name>_<split> for a file).")
flags.DEFINE_string("dtype", "float32", "Compute dtype: float32 or bfloat16.")

CI_METRICS = ("srcc", "plcc")


def example_names(builder, split: str) -> list[str]:
  """The file name of each example, in split order (the order of evaluation indices): mst's
  builders call it `name`, tfds's catalogue `file_name`; else the position."""
  features = builder.info.features
  key = next((k for k in ("name", "file_name") if k in features), None)
  if key is None:
    return [str(i) for i in range(builder.info.splits[split].num_examples)]
  data = input_pipeline.read_split(builder, split, input_pipeline.Host())
  return [name.decode() for name in data.map(lambda e: e[key]).as_numpy_iterator()]


def evaluate_checkpoint(config, path: str, split: str, builder, mesh) -> tuple[dict, dict]:
  """(metrics with confidence intervals, per-example columns) of one checkpoint on `split`."""
  loaded = checkpoint.load_for_inference(path, dtype=FLAGS.dtype)
  evaluator = evaluate.Evaluator(
      builder, split, model=musiq.Musiq(loaded.model_config), pp_config=loaded.pp_config,
      batch_size=config.eval.batch_size, mesh=mesh, mos_scale=loaded.score_scale,
      ava_metrics=config.eval.ava_metrics)
  result = evaluator.predictions(jax.device_put(loaded.params))
  if loaded.model_config.head == "classification":
    scores = {"accuracy": float(np.mean(result.prediction == result.target))}
  else:
    scores = metrics.quality_metrics(result.prediction, result.target,
                                     ava=config.eval.ava_metrics)
    if config.eval.bootstrap_samples:
      for name in CI_METRICS:
        low, high = metrics.bootstrap_ci(getattr(metrics, name), result.prediction,
                                         result.target, samples=config.eval.bootstrap_samples,
                                         seed=config.seed)
        scores[f"{name}_ci95_low"], scores[f"{name}_ci95_high"] = low, high
  columns = {"name": example_names(builder, split), "target": result.target,
             "prediction": result.prediction}
  return scores, columns


def write_outputs(output_dir: str, scores: dict, columns: dict) -> None:
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(scores, f, indent=2)
  with open(os.path.join(output_dir, "predictions.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["index", "image", "target", "prediction"])
    for index, row in enumerate(zip(columns["name"], columns["target"], columns["prediction"])):
      writer.writerow([index, row[0], f"{row[1]:.6g}", f"{row[2]:.6g}"])


def format_table(title: str, rows: dict[str, str]) -> str:
  lines = [f"| {title} | value |", "|---|---:|"]
  return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows.items()])


def single_table(split: str, scores: dict) -> str:
  rows = {}
  for name, value in scores.items():
    if name.endswith(("_ci95_low", "_ci95_high")):
      continue
    text = f"{value:.4f}"
    if f"{name}_ci95_low" in scores:
      text += f" (95% CI {scores[f'{name}_ci95_low']:.4f} to {scores[f'{name}_ci95_high']:.4f})"
    rows[name] = text
  return format_table(f"{split} metric", rows)


def aggregate(per_run: list[dict]) -> dict[str, tuple[float, float]]:
  """Mean and (sample) standard deviation of each metric over the runs."""
  names = [n for n in per_run[0] if not n.endswith(("_ci95_low", "_ci95_high"))]
  out = {}
  for name in names:
    values = np.array([run[name] for run in per_run], float)
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    out[name] = (float(values.mean()), std)
  return out


def _default_output_dir(path: str, split: str) -> str:
  if os.path.isdir(path):
    return os.path.join(path, f"eval_{split}")
  stem = os.path.splitext(os.path.basename(path))[0]
  return os.path.abspath(f"eval_{stem}_{split}")


def main(argv):
  config, split = FLAGS.config, FLAGS.split
  runs = list(FLAGS.runs or []) + list(argv[1:] if FLAGS.runs else [])
  if bool(FLAGS.checkpoint) == bool(runs):
    raise app.UsageError("give either --checkpoint PATH or --runs DIR ...")
  if argv[1:] and not FLAGS.runs:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sharding.initialize_distributed()
  mesh = sharding.make_mesh()
  builder = training_data.build_dataset(config)
  chief = jax.process_index() == 0
  per_run = []
  for path in [FLAGS.checkpoint] if FLAGS.checkpoint else runs:
    scores, columns = evaluate_checkpoint(config, path, split, builder, mesh)
    output_dir = FLAGS.output_dir if FLAGS.checkpoint and FLAGS.output_dir else None
    if not output_dir:
      output_dir = _default_output_dir(path, split)
    if chief:
      write_outputs(output_dir, scores, columns)
      print(f"{path}: {len(columns['name'])} images of {split}, written to {output_dir}")
      print(single_table(split, scores), flush=True)
    per_run.append(scores)
  if runs and chief:
    summary = aggregate(per_run)
    rows = {name: f"{mean:.4f} ± {std:.4f}" for name, (mean, std) in summary.items()}
    print(f"\n{len(runs)} runs, mean ± std:")
    print(format_table(f"{split} metric", rows), flush=True)
    if FLAGS.output_dir:
      os.makedirs(FLAGS.output_dir, exist_ok=True)
      with open(os.path.join(FLAGS.output_dir, "runs_metrics.json"), "w") as f:
        json.dump({"runs": runs, "mean_std": summary}, f, indent=2)


def run():
  """Console-script entry point."""
  flags.mark_flag_as_required("config")
  app.run(main)


if __name__ == "__main__":
  run()
