// A small hand-drawn SVG line chart: time on x, values on y, one polyline per series, the
// range labelled. Colours come from the stylesheet (series classes), nothing inline.
import { s, h } from './dom.js';
import { clock } from './format.js';

const WIDTH = 480;
const HEIGHT = 160;
const PAD_LEFT = 56;
const PAD_BOTTOM = 20;
const PAD_TOP = 8;
const PAD_RIGHT = 8;

/**
 * `series`: `[{name, class, points: [[t, value], ...]}]`; `label(value)` formats the y axis.
 * Returns a figure with the chart and a legend, or a note while there are too few points.
 */
export function lineChart(title, series, label, note) {
  const all = series.flatMap((one) => one.points);
  const figure = h('figure', { class: 'chart' }, h('figcaption', {}, title));
  if (all.length < 2) {
    figure.append(h('p', { class: 'muted' }, 'Collecting samples… (one every few seconds)'));
    if (note) figure.append(h('p', { class: 'muted small' }, note));
    return figure;
  }
  const tMin = Math.min(...all.map((p) => p[0]));
  const tMax = Math.max(...all.map((p) => p[0]), tMin + 1);
  const vMax = Math.max(...all.map((p) => p[1]), 1);
  const x = (t) => PAD_LEFT + ((t - tMin) / (tMax - tMin)) * (WIDTH - PAD_LEFT - PAD_RIGHT);
  const y = (v) => HEIGHT - PAD_BOTTOM - (v / vMax) * (HEIGHT - PAD_BOTTOM - PAD_TOP);
  const svg = s('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: 'chart-svg', role: 'img', 'aria-label': title },
    s('line', { x1: PAD_LEFT, y1: HEIGHT - PAD_BOTTOM, x2: WIDTH - PAD_RIGHT, y2: HEIGHT - PAD_BOTTOM, class: 'axis' }),
    s('line', { x1: PAD_LEFT, y1: PAD_TOP, x2: PAD_LEFT, y2: HEIGHT - PAD_BOTTOM, class: 'axis' }),
    s('text', { x: PAD_LEFT - 4, y: PAD_TOP + 8, class: 'tick end' }, label(vMax)),
    s('text', { x: PAD_LEFT - 4, y: HEIGHT - PAD_BOTTOM, class: 'tick end' }, label(0)),
    s('text', { x: PAD_LEFT, y: HEIGHT - 4, class: 'tick' }, clock(tMin)),
    s('text', { x: WIDTH - PAD_RIGHT, y: HEIGHT - 4, class: 'tick end' }, clock(tMax)),
    series.filter((one) => one.points.length > 0).map((one) => s('polyline', {
      class: `series ${one.class}`,
      points: one.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
    })));
  figure.append(svg, h('div', { class: 'legend' },
    series.map((one) => h('span', { class: `key ${one.class}` }, one.name))));
  if (note) figure.append(h('p', { class: 'muted small' }, note));
  return figure;
}
