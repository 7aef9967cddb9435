"""Pictures of what a model learned and how it scores: the attention rollout (`rollout`), its
figures (`figures`), the predicted-against-true scatter (`scatter`) and mst-eval's report.html
(`html_report`), which draws the metrics of `mst.evaluation`."""
