"""The console scripts, one thin module each: parse flags, call one library function, print.

    mst-train      mst.cli.train       train or resume a model in a workdir
    mst-eval       mst.cli.evaluate    evaluate checkpoints on a dataset split
    mst-predict    mst.cli.predict     score image files and folders
    mst-visualize  mst.cli.visualize   attention rollout and HSE figures
    mst-datasets   mst.cli.datasets    prepare datasets from their original downloads
    mst-export     mst.cli.export      a TF SavedModel that serves like TF Hub's MUSIQ

Every script is `main(argv=None) -> exit status`, built on `mst.cli.flags` (argparse): flags are
spelled with dashes (`--output-dir`); the underscore spellings of earlier versions
(`--output_dir`) are accepted too. No library module imports this package.
"""

import os

# Before anything imports TensorFlow: no C++ INFO lines, no oneDNN notice.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
