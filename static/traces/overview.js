// Draws the overview charts with uPlot from the data embedded by json_script ("overview-series").
(function () {
  "use strict";
  const el = document.getElementById("overview-series");
  if (!el || typeof uPlot === "undefined") return;
  const d = JSON.parse(el.textContent);
  const charts = [];

  function make(id, series, data, yFormat) {
    const target = document.getElementById(id);
    if (!target) return;
    const opts = {
      width: Math.max(target.clientWidth, 240),
      height: 200,
      series: [{}, ...series],
      axes: [{}, { size: 80, values: (u, ticks) => ticks.map(yFormat) }],
      scales: { x: { time: true } },
      legend: { live: true },
    };
    charts.push([target, new uPlot(opts, [d.t, ...data], target)]);
  }

  const count = (v) => (v == null ? "" : v.toLocaleString());
  make("chart-requests", [
    { label: "Requests", stroke: "#2454c5", fill: "rgba(36,84,197,.08)", value: (u, v) => count(v) },
    { label: "Errors", stroke: "#d92d20", value: (u, v) => count(v) },
  ], [d.requests, d.errors], count);
  const usd = (v) => (v == null ? "" : "$" + (v >= 1 ? v.toFixed(2) : v.toPrecision(3)));
  make("chart-cost", [
    { label: "Cost", stroke: "#0e9384", fill: "rgba(14,147,132,.08)", value: (u, v) => usd(v) },
  ], [d.cost], usd);
  const ms = (v) => (v == null ? "" : Math.round(v).toLocaleString() + " ms");
  make("chart-latency", [
    { label: "p50", stroke: "#2454c5", value: (u, v) => ms(v), spanGaps: false },
    { label: "p95", stroke: "#dc6803", value: (u, v) => ms(v) },
    { label: "p99", stroke: "#d92d20", value: (u, v) => ms(v) },
  ], [d.p50, d.p95, d.p99], ms);

  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => charts.forEach(([target, plot]) => plot.setSize({ width: Math.max(target.clientWidth, 240), height: 200 })), 150);
  });
})();
