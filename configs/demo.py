"""The README's demo ("Train the demo"): learn image quality from scratch on a CPU in minutes (the
`demo` dataset).

The demo set holds 128 px crops of scikit-image's photographs, pristine and with graded blur, noise,
JPEG and pixelation (MOS 90 ... 10); its test photos are never seen in training. The paper's recipe
(SGD from an ImageNet model, 27 M parameters, l = 512) does not fit 2 CPU cores, and from scratch
the plain recipe collapses to a constant predictor (docs/training.md, "Learning on a CPU"). What
learns: a small model with the cheap `conv` patch encoder; the native image (16 tokens: a 128 px
crop is 4 x 4 patches, nothing is cut) plus one 64 px copy (4 tokens); AdamW 1e-3 with the
`embedding` kernel's learning rate x0.1 (its first large steps otherwise move every token alike);
the head bias started at the mean training MOS; L1 on MOS / 100; cosine decay after a 20-step
warm-up.
"""

import ml_collections

from mst.config import defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The CPU demo; `arg` may be "runlocal" (smaller still, for tests)."""
  args = defaults.parse_arg(arg)
  config = defaults.get_config()
  config.dataset.name = "demo"
  config.dataset.mos_scale = 100.0
  # No dropout, stochastic depth or clipping (the defaults), as measured: a tiny model that
  # underfits rather than overfits, and the warm-up tames the first steps. Measured on 2 shared
  # CPU cores (each of two runs side by side had about one): 1500 steps and three validation
  # evaluations took 7.2 minutes in all; test SRCC 0.845 (seed 0) and 0.887 (seed 1); validation
  # SRCC 0.76 / 0.84 / 0.85 at steps 500 / 1000 / 1500.
  defaults.cpu_from_scratch(config, max_seq_len=16, learning_rate=1e-3, embedding_lr_factor=0.1,
                            weight_decay=0.01,  # PyTorch's AdamW default, decoupled, kernels only
                            num_steps=1500, eval_every_steps=500, checkpoint_every_steps=500)
  if "runlocal" in args:
    defaults.runlocal(config)
    config.preprocess.longer_side_lengths = (64,)
    config.preprocess.max_seq_len = 16
    config.model.hidden_size = 32
    config.model.num_layers = 1
    config.model.mlp_dim = 64
  return config
