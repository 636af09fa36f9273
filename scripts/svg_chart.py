"""Small charts written as SVG text, with the standard library alone.

The demo's picture (scripts/demo_summary.py) is a row of panels: lines of
(x, y) points, or bars with their values written above them, a dashed
reference line, axis titles and round-numbered ticks. SVG is text that any
browser and GitHub's README view draw; writing it here keeps a plotting
library, and its import at every TensorFlow start (Keras imports matplotlib
when it is installed), out of the project.

  panel = Panel("Loss", xlabel="step", ylabel="loss")
  panel.line([1, 2, 3], [0.9, 0.5, 0.4], "blue", "run 1")
  svg_text = figure_svg([panel])
"""

import math
from xml.sax.saxutils import escape

# The colours of matplotlib's default cycle, so the picture looks familiar.
COLORS = {"blue": "#1f77b4", "orange": "#ff7f0e", "green": "#2ca02c",
          "gray": "#7f7f7f", "red": "#d62728", "purple": "#9467bd",
          "cyan": "#17becf"}

PANEL_WIDTH = 500
PANEL_HEIGHT = 360
# Room around a panel's plotting area: tick labels and the y title on the
# left, the title on top, tick labels of up to three lines and the x title
# below.
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 16, 32, 76
_FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'


def nice_ticks(low, high, count=5):
  """Tick values for the range [low, high]: multiples of a round step.

  The step is 1, 2 or 5 times a power of ten, the smallest such that about
  `count` steps cover the range. Returns (ticks, step); every tick lies in
  [low, high].
  """
  span = high - low
  if span <= 0:
    span = abs(high) or 1.0
  raw = span / count
  power = 10.0 ** math.floor(math.log10(raw))
  step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * 0.999)
  first = math.ceil(low / step - 1e-9)
  last = math.floor(high / step + 1e-9)
  return [round(i * step, 12) for i in range(first, last + 1)], step


def tick_label(value, step):
  """`value` written with as many decimals as `step` needs."""
  decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
  return "%.*f" % (decimals, value)


class Panel(object):
  """One chart: lines or bars in data coordinates, with axes and a title."""

  def __init__(self, title, xlabel="", ylabel=""):
    self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
    self.lines = []  # (xs, ys, colour name, legend label)
    self.bar_values = []  # (name, value, colour name), left to right
    self.bar_ranges = []  # (low, high) of each bar, or empty
    self.reference = None  # (y, label) of a dashed horizontal line
    self.ylim = None

  def line(self, xs, ys, color, label):
    """A line through the points (xs[i], ys[i]), each marked with a dot."""
    if len(xs) != len(ys):
      raise ValueError("a line needs as many x as y values")
    if xs:
      self.lines.append(([float(x) for x in xs], [float(y) for y in ys],
                         color, label))

  def bars(self, names, values, colors, ranges=None):
    """Bars left to right; `names` (may hold "\\n") label the x axis.

    `ranges`, one (low, high) per bar (e.g. the lowest and highest of the
    seeds whose mean the bar shows), draws a whisker across each bar.
    """
    bar_values = [(n, float(v), c) for n, v, c in zip(names, values, colors)]
    bar_ranges = [(float(lo), float(hi)) for lo, hi in ranges or []]
    if ranges is not None and len(bar_ranges) != len(bar_values):
      raise ValueError("bars need one range per bar")
    self.bar_values, self.bar_ranges = bar_values, bar_ranges

  def reference_line(self, y, label):
    """A dashed horizontal line across the panel at `y`, labelled."""
    self.reference = (float(y), label)

  def set_ylim(self, low, high):
    self.ylim = (float(low), float(high))

  def _ranges(self):
    """((x low, x high), (y low, y high)) that the panel shows."""
    if self.bar_values:
      xr = (-0.6, len(self.bar_values) - 0.4)
      ys = [v for _, v, _ in self.bar_values] + [0.0] + [
          hi for _, hi in self.bar_ranges]
    else:
      xs = [x for line in self.lines for x in line[0]] or [0.0, 1.0]
      pad = 0.05 * ((max(xs) - min(xs)) or 1.0)
      xr = (min(xs) - pad, max(xs) + pad)
      ys = [y for line in self.lines for y in line[1]] or [0.0, 1.0]
    if self.reference:
      ys.append(self.reference[0])
    if self.ylim:
      return xr, self.ylim
    pad = 0.05 * ((max(ys) - min(ys)) or abs(max(ys)) or 1.0)
    return xr, (min(ys) - (0 if self.bar_values else pad), max(ys) + pad)

  def svg(self, left):
    """The panel's SVG elements, its box starting at x = `left`."""
    (x0, x1), (y0, y1) = self._ranges()
    width = PANEL_WIDTH - _LEFT - _RIGHT
    height = PANEL_HEIGHT - _TOP - _BOTTOM
    px = lambda x: left + _LEFT + (x - x0) / (x1 - x0) * width
    py = lambda y: _TOP + (y1 - y) / (y1 - y0) * height
    out = ['<g class="panel">']

    def text(x, y, s, anchor="middle", size=12, extra=""):
      if s:  # an empty label (no axis title) writes no element
        out.append('<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d" '
                   '%s%s>%s</text>' % (x, y, anchor, size, _FONT, extra,
                                       escape(s)))

    line = lambda x_1, y_1, x_2, y_2, attributes: out.append(
        '<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" %s/>' % (
            x_1, y_1, x_2, y_2, attributes))
    # Ticks and grid on the y axis.
    ticks, step = nice_ticks(y0, y1, count=6)
    for value in ticks:
      y = py(value)
      line(px(x0), y, px(x1), y, 'stroke="#dddddd"')
      text(px(x0) - 6, y + 4, tick_label(value, step), anchor="end",
           size=11)
    # The x axis: categories under bars, round numbers under lines.
    if self.bar_values:
      for i, (name, _, _) in enumerate(self.bar_values):
        for j, part in enumerate(name.split("\n")):
          text(px(i), py(y0) + 16 + 13 * j, part, size=11)
    else:
      xticks, xstep = nice_ticks(x0, x1)
      for value in xticks:
        text(px(value), py(y0) + 16, tick_label(value, xstep), size=11)
    # The data.
    for i, (name, value, color) in enumerate(self.bar_values):
      top, base = py(max(value, y0)), py(max(y0, 0.0))
      out.append('<rect class="bar" x="%.1f" y="%.1f" width="%.1f" '
                 'height="%.1f" fill="%s"/>' % (
                     px(i - 0.4), top, px(i + 0.4) - px(i - 0.4),
                     max(0.0, base - top), COLORS[color]))
      if self.bar_ranges:
        low, high = (min(max(y, y0), y1) for y in self.bar_ranges[i])
        line(px(i), py(low), px(i), py(high), 'class="range" stroke="black"')
        for y in (low, high):
          line(px(i - 0.12), py(y), px(i + 0.12), py(y), 'stroke="black"')
        top = min(top, py(high))
      text(px(i), top - 4, "%.3f" % value, size=11)
    if self.reference:
      y = py(self.reference[0])
      line(px(x0), y, px(x1), y,
           'class="reference" stroke="black" stroke-dasharray="5,4"')
      text(px(x0) + 4, y - 4, self.reference[1], anchor="start", size=10)
    for xs, ys, color, _ in self.lines:
      points = " ".join("%.1f,%.1f" % (px(x), py(y)) for x, y in zip(xs, ys))
      out.append('<polyline class="line" points="%s" fill="none" '
                 'stroke="%s" stroke-width="1.5"/>' % (points, COLORS[color]))
      for x, y in zip(xs, ys):
        out.append('<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>' % (
            px(x), py(y), COLORS[color]))
    # Frame, titles, legend.
    out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" '
               'fill="none" stroke="black"/>' % (px(x0), py(y1), width,
                                                 height))
    text(left + PANEL_WIDTH / 2, _TOP - 12, self.title, size=13)
    tick_lines = max([n.count("\n") + 1 for n, _, _ in self.bar_values] or
                     [1])
    text(px((x0 + x1) / 2), py(y0) + 22 + 13 * tick_lines, self.xlabel)
    text(left + 16, _TOP + height / 2, self.ylabel,
         extra=' transform="rotate(-90 %.1f %.1f)"' % (
             left + 16, _TOP + height / 2))
    for i, (_, _, color, label) in enumerate(self.lines):
      y = py(y1) + 16 + 16 * i
      line(px(x1) - 150, y - 4, px(x1) - 128, y - 4,
           'stroke="%s" stroke-width="2"' % COLORS[color])
      text(px(x1) - 122, y, label, anchor="start", size=11)
    out.append("</g>")
    return out


def figure_svg(panels):
  """A row of `panels` as one SVG document (text)."""
  width = PANEL_WIDTH * len(panels)
  out = ['<?xml version="1.0" encoding="UTF-8"?>',
         '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
         'viewBox="0 0 %d %d">' % (width, PANEL_HEIGHT, width, PANEL_HEIGHT),
         '<rect width="100%" height="100%" fill="white"/>']
  for i, panel in enumerate(panels):
    out.extend(panel.svg(i * PANEL_WIDTH))
  out.append("</svg>")
  return "\n".join(out) + "\n"

