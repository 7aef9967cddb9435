"""Fine-tuning on one of the IQA papers' evaluation sets, and their protocol of seeded splits.

    mst-train --config=configs/iqa.py:kadid10k --workdir=runs/kadid_split0
    python experiments/sweep.py run splits --config configs/iqa.py --arg kadid10k --root runs/kadid
    python experiments/sweep.py collect --root runs/kadid --name splits

The variant names the dataset: `livec` (the default), `kadid10k`, `tid2013`, `live` or `csiq`,
prepared from its original download (docs/datasets.md). IQA papers train on a random 80% and
test on the other 20% (by reference image for the synthetic sets, so no content is in both),
repeat that for 10 seeds and report the median: the builders' `train`/`test` are that split,
`dataset.split_seed` chooses it, and the `splits` sweep trains on seeds 0-9 and tabulates the
median and the spread. These sets have no validation split, so the test metrics are the last
step's (`eval.select = "last"`).

The optimisation is KonIQ-10k's row of the paper (SGD with momentum, cosine from 2e-3, 30 epochs,
batch 96, L1, from the ImageNet pre-trained model). Each set's MOS is trained divided by the top
of its scale (`dataset.mos_scale`), so every set's labels lie in about 0-1 and the one learning
rate suits them all; predictions come back on the set's own scale.
"""

import ml_collections

from mst.config import defaults

# The top of each set's `mos` scale (higher is better; LIVE and CSIQ: derived from their DMOS).
MOS_SCALES = {"livec": 100.0, "kadid10k": 5.0, "tid2013": 9.0, "live": 100.0, "csiq": 1.0}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Fine-tuning on an IQA evaluation set; `arg` names the set (default livec) and may add the
  variant "runlocal"."""
  names = [name.strip() for name in (arg or "").split(",") if name.strip()]
  chosen = [name for name in names if name in MOS_SCALES]
  if len(set(chosen)) > 1:
    raise ValueError(f"configs/iqa.py: name one dataset, not {chosen}")
  unknown = sorted(set(names) - set(MOS_SCALES) - set(defaults.VARIANTS))
  if unknown:
    raise ValueError(f"unknown config variant(s) {unknown}; valid: "
                     f"{list(defaults.VARIANTS + tuple(MOS_SCALES))} (one dataset at most)")
  dataset = chosen[0] if chosen else "livec"
  config = defaults.get_config()
  defaults.paper_finetune(config, dataset=dataset, learning_rate=2e-3, batch_size=96, epochs=30)
  config.dataset.mos_scale = MOS_SCALES[dataset]
  config.dataset.eval_split = ""  # no validation split: train on all of `train`
  config.eval.select = "last"
  config.init.head_bias_from_train_mean = True
  return defaults.apply_variants(config, ",".join(set(names) - set(MOS_SCALES)))
