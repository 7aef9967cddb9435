"""Multi-scale composition on PaQ-2-PiQ (paper, test SRCC/PLCC: (224) 0.600/0.667 ...
(full, 384, 224) 0.646/0.739).

"full" is the native image: kept with the config's l (`preprocess.max_seq_len`, 512 in the paper)
tokens at training time and all of its patches at evaluation. A composition without it sets
`preprocess.max_seq_len=0`, which drops the native image in training and evaluation alike.
"""

import ml_collections

from experiments.sweeps.base import Run

# (resized longer sides in the paper's order, native image kept, the paper's SRCC/PLCC)
COMPOSITIONS = (
    ((224,), False, (0.600, 0.667)),
    ((384,), False, None),
    ((512,), False, None),
    ((384, 224), False, None),
    ((512, 384, 224), False, None),
    ((), True, None),
    ((224,), True, None),
    ((384,), True, None),
    ((384, 224), True, (0.646, 0.739)),
)


def runs(config: ml_collections.ConfigDict) -> list[Run]:
  del config  # absolute settings; "full" keeps the config's l
  result = []
  for lengths, full, paper in COMPOSITIONS:
    parts = (["full"] if full else []) + [str(length) for length in lengths]
    overrides = {"preprocess.longer_side_lengths": lengths}
    if not full:
      overrides["preprocess.max_seq_len"] = 0
    result.append(Run("_".join(parts), overrides, f"({', '.join(parts)})", paper))
  return result
