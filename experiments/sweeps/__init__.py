"""The paper's ablations and a hyper-parameter grid, by name (see experiments/sweep.py).

An explicit dict, no registry: a study is listed here or it does not exist.
"""

from experiments.sweeps import lr_batch
from experiments.sweeps import multiscale
from experiments.sweeps import patch_encoder
from experiments.sweeps import patch_size
from experiments.sweeps import scale_embedding
from experiments.sweeps import spatial_embedding
from experiments.sweeps import splits
from experiments.sweeps.base import Overrides
from experiments.sweeps.base import Run
from experiments.sweeps.base import Sweep

SWEEPS: dict[str, Sweep] = {
    "spatial_embedding": Sweep(spatial_embedding.runs, "configs/ava.py", "Spatial embedding",
                               "none / fixed-length / HSE with G = 5, 10, 15 (AVA)"),
    "scale_embedding": Sweep(scale_embedding.runs, "configs/ava.py", "Scale embedding",
                             "SCE on / off (AVA)"),
    "patch_encoder": Sweep(patch_encoder.runs, "configs/ava.py", "Patch encoder",
                           "linear / conv / 5-layer ResNet (AVA)"),
    "patch_size": Sweep(patch_size.runs, "configs/ava.py", "Patch size",
                        "P = 16, 32, 48, 64 (AVA)"),
    "multiscale": Sweep(multiscale.runs, "configs/paq2piq.py", "Scales",
                        "resized copies with and without the native image (PaQ-2-PiQ)"),
    "lr_batch": Sweep(lr_batch.runs, "configs/ava.py", "Learning rate, batch",
                      "learning rate x {0.5, 1, 2}, batch x {0.5, 1, 2} of the config's"),
    "splits": Sweep(splits.runs, "configs/iqa.py", "Split",
                    "10 seeded 80/20 train/test splits of one dataset (configs/iqa.py --arg "
                    "kadid10k, ...): median and spread, the IQA papers' protocol", median=True),
}

__all__ = ["SWEEPS", "Overrides", "Run", "Sweep"]
