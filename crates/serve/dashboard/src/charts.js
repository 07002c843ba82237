// One uPlot chart per metric, one series per model. Charts are created once and then
// fed new data with setData, so a refresh never blanks them; a chart is rebuilt only
// when the set of models it shows changes.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import * as fmt from './format.js';

/** Per-minute counts shown as rates: divide by the step (s) or scale to a minute. */
const perSecond = (value, stepSeconds) => value / stepSeconds;
const perMinute = (value, stepSeconds) => (value * 60) / stepSeconds;

const LATENCY_ANOMALIES = ['latency_p95', 'latency_mean', 'latency_ms_per_output_token'];

/** What the dashboard plots; `anomalies` names the detector metrics marked on it. */
export const CHARTS = [
  { id: 'request_rate', title: 'Requests / s', metric: 'requests', transform: perSecond, format: fmt.count, anomalies: [] },
  { id: 'error_rate', title: 'Error rate', metric: 'error_rate', format: fmt.percent, anomalies: ['error_rate'] },
  { id: 'latency_p50', title: 'Latency p50', metric: 'latency_p50', format: fmt.ms, anomalies: LATENCY_ANOMALIES },
  { id: 'latency_p95', title: 'Latency p95', metric: 'latency_p95', format: fmt.ms, anomalies: LATENCY_ANOMALIES },
  { id: 'latency_p99', title: 'Latency p99', metric: 'latency_p99', format: fmt.ms, anomalies: LATENCY_ANOMALIES },
  { id: 'ttft_p50', title: 'Time to first token p50', metric: 'ttft_p50', format: fmt.ms, anomalies: ['ttft_p95'] },
  { id: 'ttft_p95', title: 'Time to first token p95', metric: 'ttft_p95', format: fmt.ms, anomalies: ['ttft_p95'] },
  { id: 'input_tokens', title: 'Input tokens / min', metric: 'input_tokens', transform: perMinute, format: fmt.count, anomalies: ['tokens'] },
  { id: 'output_tokens', title: 'Output tokens / min', metric: 'output_tokens', transform: perMinute, format: fmt.count, anomalies: ['tokens'] },
  { id: 'cost', title: 'Cost / min', metric: 'cost_usd', transform: perMinute, format: fmt.usd, anomalies: ['cost_usd'] },
];

const PALETTE = [
  '#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2',
  '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac',
];

const assigned = new Map();

/**
 * Gives each model its colour, in name order the first time it is seen, so a model
 * keeps its colour across charts, tables and refreshes.
 */
export function assignColors(models) {
  for (const model of [...models].sort()) {
    if (!assigned.has(model)) assigned.set(model, PALETTE[assigned.size % PALETTE.length]);
  }
}

export function colorOf(model) {
  if (!assigned.has(model)) assignColors([model]);
  return assigned.get(model);
}

/** Draws anomaly windows as shaded bands with a marker on top. */
function anomalyPlugin(panel) {
  return {
    hooks: {
      draw: [
        (u) => {
          const { ctx } = u;
          const { top, height } = u.bbox;
          ctx.save();
          for (const mark of panel.marks) {
            const left = u.valToPos(mark.from / 1000, 'x', true);
            const right = u.valToPos(mark.to / 1000, 'x', true);
            if (right < u.bbox.left || left > u.bbox.left + u.bbox.width) continue;
            const width = Math.max(right - left, 3 * uPlot.pxRatio);
            ctx.fillStyle = mark.firing ? 'rgba(225, 87, 89, 0.18)' : 'rgba(225, 87, 89, 0.10)';
            ctx.fillRect(left, top, width, height);
            ctx.fillStyle = '#e15759';
            const size = 5 * uPlot.pxRatio;
            ctx.beginPath();
            ctx.moveTo(left + width / 2 - size, top);
            ctx.lineTo(left + width / 2 + size, top);
            ctx.lineTo(left + width / 2, top + size * 1.6);
            ctx.closePath();
            ctx.fill();
          }
          ctx.restore();
        },
      ],
    },
  };
}

class ChartPanel {
  constructor(spec, container) {
    this.spec = spec;
    this.marks = [];
    this.models = null;
    this.plot = null;
    this.figure = document.createElement('figure');
    this.figure.className = 'chart';
    this.figure.dataset.chart = spec.id;
    this.figure.dataset.points = '0';
    this.figure.dataset.series = '0';
    this.figure.dataset.anomalyMarks = '0';
    const caption = document.createElement('figcaption');
    caption.textContent = spec.title;
    this.figure.append(caption);
    this.canvasHolder = document.createElement('div');
    this.canvasHolder.className = 'plot';
    this.figure.append(this.canvasHolder);
    container.append(this.figure);
  }

  width() {
    return Math.max(this.canvasHolder.clientWidth || this.figure.clientWidth - 16, 240);
  }

  build(models, data) {
    if (this.plot) this.plot.destroy();
    const format = this.spec.format;
    const options = {
      width: this.width(),
      height: 190,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: '#9aa4b2', grid: { stroke: '#2a313c' }, ticks: { stroke: '#2a313c' } },
        {
          stroke: '#9aa4b2',
          grid: { stroke: '#2a313c' },
          ticks: { stroke: '#2a313c' },
          size: 64,
          values: (u, splits) => splits.map((v) => format(v)),
        },
      ],
      series: [
        {},
        ...models.map((model) => ({
          label: model,
          stroke: colorOf(model),
          width: 1.5,
          spanGaps: false,
          points: { show: false },
          value: (u, v) => (v === null || v === undefined ? '–' : format(v)),
        })),
      ],
      plugins: [anomalyPlugin(this)],
    };
    this.plot = new uPlot(options, data, this.canvasHolder);
    this.models = models;
  }

  /**
   * New data for the chart: `series` as the timeseries API returns it, `stepSeconds`
   * its step, `marks` the anomaly windows to shade.
   */
  update(series, stepSeconds, marks) {
    const models = series.map((entry) => entry.model);
    const xs = series.length > 0 ? series[0].points.map(([t]) => t / 1000) : [];
    const transform = this.spec.transform;
    let points = 0;
    const ys = series.map((entry) =>
      entry.points.map(([, value]) => {
        if (value === null || value === undefined) return null;
        points += 1;
        return transform ? transform(value, stepSeconds) : value;
      }),
    );
    this.marks = marks;
    const data = [xs, ...ys];
    const sameModels = this.models && this.models.length === models.length
      && this.models.every((model, i) => model === models[i]);
    if (!sameModels) {
      this.build(models, data);
    } else {
      this.plot.setData(data);
    }
    this.figure.dataset.points = String(points);
    this.figure.dataset.series = String(models.length);
    this.figure.dataset.anomalyMarks = String(marks.length);
    this.figure.classList.toggle('empty', points === 0);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: 190 });
  }
}

export class ChartGrid {
  constructor(container) {
    this.panels = CHARTS.map((spec) => new ChartPanel(spec, container));
    let pending = false;
    const observer = new ResizeObserver(() => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        for (const panel of this.panels) panel.resize();
      });
    });
    observer.observe(container);
  }

  /**
   * `results` maps a chart id to its timeseries answer; `anomalies` is the anomaly list
   * of the range; `models` the models shown (for marks of the "*" pseudo-model, every one).
   */
  update(results, anomalies, stepSeconds) {
    for (const panel of this.panels) {
      const answer = results.get(panel.spec.id);
      if (!answer) continue;
      const shown = new Set(answer.series.map((entry) => entry.model));
      const marks = anomalies
        .filter((a) => panel.spec.anomalies.includes(a.metric) && (a.model === '*' || shown.has(a.model)))
        .map((a) => ({
          from: a.window_start,
          to: (a.resolved_window ?? a.window_start) + 60_000,
          firing: a.state === 'firing',
        }));
      panel.update(answer.series, stepSeconds, marks);
    }
  }
}
