// Overview: spend per day or hour over a period, stacked by model, and the period's totals.
import { useEffect, useRef, useState } from "preact/hooks";
import {
  BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, Tooltip,
} from "chart.js";
import { call, withQuery } from "./api.js";
import { count, dollars } from "./format.js";
import { ErrorNote } from "./parts.jsx";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

const HOUR = 3_600_000;
const PERIODS = {
  "24h": { span: 24 * HOUR, bucket: "hour" },
  "7d": { span: 7 * 24 * HOUR, bucket: "day" },
  "30d": { span: 30 * 24 * HOUR, bucket: "day" },
};
const COLORS = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#65a30d", "#db2777"];

/** Chart.js datasets from series points: one stacked dataset per model, one bar per bucket. */
export function datasets(points, bucketStarts) {
  const byModel = new Map();
  for (const p of points) {
    const model = p.group ?? "(none)";
    if (!byModel.has(model)) byModel.set(model, new Map());
    byModel.get(model).set(p.bucket_start_ms, Number(p.cost_usd));
  }
  return [...byModel.entries()].map(([model, costs], i) => ({
    label: model,
    data: bucketStarts.map((t) => costs.get(t) ?? 0),
    backgroundColor: COLORS[i % COLORS.length],
    stack: "spend",
  }));
}

function SpendChart({ series }) {
  const canvas = useRef(null);
  useEffect(() => {
    const step = series.bucket === "hour" ? HOUR : 24 * HOUR;
    const starts = [];
    // Buckets start on whole hours or UTC days, counted from the epoch like the API's.
    for (let t = Math.floor(series.from_ms / step) * step; t < series.to_ms; t += step) starts.push(t);
    const label = (t) => {
      const d = new Date(t);
      return series.bucket === "hour"
        ? `${d.getHours()}:00`
        : d.toLocaleDateString(undefined, { timeZone: "UTC" });
    };
    const chart = new Chart(canvas.current, {
      type: "bar",
      data: { labels: starts.map(label), datasets: datasets(series.points, starts) },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { stacked: true },
          y: { stacked: true, ticks: { callback: (v) => `$${Number(v.toPrecision(3))}` } },
        },
      },
    });
    return () => chart.destroy();
  }, [series]);
  return (
    <div class="chart">
      <canvas ref={canvas} role="img" aria-label="Spend over time, stacked by model" data-testid="spend-chart" />
    </div>
  );
}

export function OverviewPage() {
  const [period, setPeriod] = useState("7d");
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    const { span, bucket } = PERIODS[period];
    const to = Math.ceil(Date.now() / HOUR) * HOUR;
    const range = { from_ms: to - span, to_ms: to };
    setData(null);
    Promise.all([
      call("GET", withQuery("/api/usage/series", { ...range, bucket, group_by: "model" })),
      call("GET", withQuery("/api/usage/summary", range)),
    ])
      .then(([series, summary]) => { setData({ series, summary }); setError(null); })
      .catch(setError);
  }, [period]);

  return (
    <>
      <div class="row" role="group" aria-label="Period">
        {Object.keys(PERIODS).map((p) => (
          <button type="button" aria-pressed={p === period} onClick={() => setPeriod(p)}>{p}</button>
        ))}
      </div>
      <ErrorNote error={error} />
      {data === null && !error && <p class="loading">Loading spend…</p>}
      {data && (
        <>
          <dl class="totals" data-testid="totals">
            <div><dt>Spend</dt><dd data-testid="total-spend">{dollars(data.summary.totals.cost_usd)}</dd></div>
            <div><dt>Calls</dt><dd>{count(data.summary.totals.calls)}</dd></div>
            <div><dt>Input tokens</dt><dd>{count(data.summary.totals.input_uncached)}</dd></div>
            <div><dt>Cache read</dt><dd>{count(data.summary.totals.cache_read)}</dd></div>
            <div><dt>Output tokens</dt><dd>{count(data.summary.totals.output)}</dd></div>
          </dl>
          <SpendChart series={data.series} />
        </>
      )}
    </>
  );
}
