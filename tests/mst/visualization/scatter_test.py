"""The prediction-against-MOS plot: dots, the logistic fit where it converges, and the numbers."""

import numpy as np

from mst.evaluation import metrics
from mst.visualization import scatter


def test_scatter_draws_every_image_and_the_logistic_fit():
  rng = np.random.default_rng(0)
  prediction = rng.uniform(0, 10, 60)
  target = 1 + 4 / (1 + np.exp(-(prediction - 5))) + rng.normal(0, 0.05, 60)
  fig = scatter.scatter_figure(prediction, target, "livec:full",
                               **metrics.scatter_stats(prediction, target))
  ax = fig.axes[0]
  assert len(ax.collections[0].get_offsets()) == 60
  (curve,) = ax.lines
  # The fitted curve follows the S-shape the labels were drawn from.
  xs, ys = curve.get_data()
  np.testing.assert_allclose(ys, 1 + 4 / (1 + np.exp(-(xs - 5))), atol=0.1)
  assert "livec:full" in ax.get_title() and "60 images" in ax.get_title()
  rgb = scatter.to_rgb(fig)
  assert rgb.dtype == np.uint8 and rgb.shape == (420, 500, 3)


def test_too_few_images_for_a_fit_draw_dots_alone():
  prediction, target = np.array([1.0, 2.0, 3.0]), np.array([2.0, 1.0, 3.0])
  fig = scatter.scatter_figure(prediction, target, "tiny",
                               **metrics.scatter_stats(prediction, target))
  assert not fig.axes[0].lines and "SRCC 0.500" in fig.axes[0].get_title()
