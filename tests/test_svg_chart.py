"""scripts/svg_chart.py: the demo's picture, drawn without a plotting library.

The SVG is parsed back and its geometry checked against the data: points
sit on the grid lines of their values, bars are as tall as their values.
"""

import os
import sys
from xml.etree import ElementTree

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "scripts"))
import svg_chart  # pylint: disable=g-import-not-at-top,wrong-import-position

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("low,high,count,ticks", [
    (0.0, 0.215, 5, [0.0, 0.05, 0.1, 0.15, 0.2]),
    (0.4, 1.0, 6, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
    (-3.0, 290.0, 5, [0.0, 100.0, 200.0]),
    (1.26, 1.59, 6, [1.3, 1.4, 1.5]),
    (5.0, 5.0, 5, [5.0]),
])
def test_ticks_are_round_and_inside_the_range(low, high, count, ticks):
  got, step = svg_chart.nice_ticks(low, high, count)
  assert got == pytest.approx(ticks)
  assert all(low - 1e-12 <= t <= high + 1e-12 for t in got)
  assert [svg_chart.tick_label(t, step) for t in got[:2]] == [
      ("%.2f" if step < 0.1 else "%.1f" if step < 1 else "%.0f") % t
      for t in got[:2]]


def _grid_lines(root):
  """label text -> y pixel of the horizontal grid line it labels."""
  lines = [l for l in root.iter(SVG + "line")
           if l.get("stroke") == "#dddddd"]
  labels = [t for t in root.iter(SVG + "text")
            if t.get("text-anchor") == "end"]
  assert len(lines) == len(labels)
  return {t.text: float(l.get("y1")) for t, l in zip(labels, lines)}


def test_line_points_lie_on_their_values():
  panel = svg_chart.Panel("Loss <train & eval>", xlabel="step",
                          ylabel="loss")
  panel.line([0, 10, 20], [0.0, 0.4, 0.8], "blue", "run")
  panel.line([], [], "orange", "no points: not drawn")
  root = ElementTree.fromstring(svg_chart.figure_svg([panel]))
  (polyline,) = root.iter(SVG + "polyline")
  points = [tuple(map(float, p.split(",")))
            for p in polyline.get("points").split()]
  grid = _grid_lines(root)
  # Equal steps in x; y on the grid lines labelled 0.0, 0.4 and 0.8 (SVG's
  # y grows downwards).
  assert points[1][0] - points[0][0] == pytest.approx(
      points[2][0] - points[1][0], abs=0.11)
  assert points[0][0] < points[2][0]
  for (_, y), label in zip(points, ("0.0", "0.4", "0.8")):
    assert y == pytest.approx(grid[label], abs=0.11)
  texts = [t.text for t in root.iter(SVG + "text")]
  assert "Loss <train & eval>" in texts and "run" in texts
  assert "no points: not drawn" not in texts


def test_bars_are_as_tall_as_their_values():
  panel = svg_chart.Panel("Accuracy")
  panel.bars(["a", "b\nsecond line"], [0.2, 0.4], ["gray", "green"])
  panel.reference_line(0.3, "majority class")
  panel.set_ylim(0, 0.5)
  other = svg_chart.Panel("Second panel")
  other.line([1, 2], [3, 4], "orange", "x")
  svg_text = svg_chart.figure_svg([panel, other])
  root = ElementTree.fromstring(svg_text)
  assert root.get("width") == str(2 * svg_chart.PANEL_WIDTH)
  bars = [r for r in root.iter(SVG + "rect") if r.get("class") == "bar"]
  assert [b.get("fill") for b in bars] == [svg_chart.COLORS["gray"],
                                           svg_chart.COLORS["green"]]
  heights = [float(b.get("height")) for b in bars]
  assert heights[1] == pytest.approx(2 * heights[0], abs=0.2)
  grid = _grid_lines(root)
  assert float(bars[0].get("y")) == pytest.approx(grid["0.2"], abs=0.11)
  assert float(bars[1].get("y")) == pytest.approx(grid["0.4"], abs=0.11)
  (reference,) = [l for l in root.iter(SVG + "line")
                  if l.get("class") == "reference"]
  assert float(reference.get("y1")) == pytest.approx(
      (grid["0.2"] + grid["0.4"]) / 2, abs=0.11)
  texts = [t.text for t in root.iter(SVG + "text")]
  for text in ("0.200", "0.400", "majority class", "b", "second line"):
    assert text in texts
  # Neither panel has axis titles: no empty text elements stand for them.
  assert all(texts), texts


def test_a_line_needs_as_many_x_as_y_values():
  with pytest.raises(ValueError, match="as many x as y"):
    svg_chart.Panel("t").line([1, 2], [1], "blue", "bad")


def test_bar_ranges_span_their_low_and_high_values():
  panel = svg_chart.Panel("Test accuracy")
  panel.bars(["a", "b"], [0.2, 0.3], ["blue", "red"],
             ranges=[(0.1, 0.3), (0.25, 0.4)])
  panel.set_ylim(0, 0.5)
  root = ElementTree.fromstring(svg_chart.figure_svg([panel]))
  grid = _grid_lines(root)
  whiskers = [l for l in root.iter(SVG + "line") if l.get("class") == "range"]
  assert len(whiskers) == 2
  for whisker, high in zip(whiskers, ["0.3", "0.4"]):
    assert whisker.get("x1") == whisker.get("x2")
    assert float(whisker.get("y2")) == pytest.approx(grid[high], abs=0.11)
  # The first whisker starts at 0.1; the second at 0.25, between 0.2 and 0.3.
  assert float(whiskers[0].get("y1")) == pytest.approx(grid["0.1"], abs=0.11)
  assert float(whiskers[1].get("y1")) == pytest.approx(
      (grid["0.2"] + grid["0.3"]) / 2, abs=0.11)
  with pytest.raises(ValueError, match="one range per bar"):
    panel.bars(["a", "b"], [0.2, 0.3], ["blue", "red"], ranges=[(0.1, 0.3)])
