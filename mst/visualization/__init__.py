"""Pictures of what a model learned and how it scores: the attention rollout (`rollout`), its
figures (`figures`) and the prediction-against-MOS plot (`scatter`). They draw the numbers they
are given, so `mst.evaluation`, above, can put them in report.html."""
