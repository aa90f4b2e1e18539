// The Routing page: the λ slider (cheapest ↔ best) reads the cost–quality curve embedded by
// json_script ("routing-curve") and shows the predicted error and cost per 1k requests at each
// position, client-side; saving the form stores λ. uPlot draws the curve (the slider's λ marked)
// and the share of routed traffic per model over time ("routing-traffic").
(function () {
  "use strict";
  const palette = ["#2454c5", "#0e9384", "#dc6803", "#7a5af8", "#d92d20", "#667085", "#b54708", "#155eef"];
  const read = (id) => { const el = document.getElementById(id); return el ? JSON.parse(el.textContent) : null; };
  const usd = (v) => (v == null ? "—" : "$" + (v >= 100 ? v.toFixed(2) : v >= 1 ? v.toFixed(3) : v.toPrecision(3)));
  const pct = (v) => (v == null ? "—" : (v * 100).toFixed(1) + "%");

  const curve = read("routing-curve");
  const traffic = read("routing-traffic");
  // Slider positions: largest λ (cheapest) on the left, λ = 0 (best) on the right, as the server orders them.
  const positions = curve ? curve.points.slice().sort((a, b) => b.lam - a.lam) : [];
  let curvePlot = null;

  function curveData(marked) {
    const xs = [];
    const add = (x) => { if (xs.indexOf(x) < 0) xs.push(x); };
    positions.forEach((p) => add(p.cost_usd * 1000));
    if (curve.baseline) add(curve.baseline.cost_usd * 1000);
    xs.sort((a, b) => a - b);
    const at = (x, y) => xs.map((v) => (v === x ? y : null));
    const line = xs.map((x) => { const p = positions.find((q) => q.cost_usd * 1000 === x); return p ? p.error : null; });
    const mark = marked ? at(marked.cost_usd * 1000, marked.error) : xs.map(() => null);
    const base = curve.baseline ? at(curve.baseline.cost_usd * 1000, curve.baseline.error) : xs.map(() => null);
    return [xs, line, mark, base];
  }

  function drawCurve(marked) {
    const target = document.getElementById("chart-curve");
    if (!target || typeof uPlot === "undefined" || !curve || !positions.length) return;
    if (curvePlot) { curvePlot.setData(curveData(marked)); return; }
    curvePlot = new uPlot({
      width: Math.max(target.clientWidth, 240),
      height: 220,
      scales: { x: { time: false } },
      axes: [{ values: (u, t) => t.map(usd) }, { size: 60, values: (u, t) => t.map(pct) }],
      series: [
        { label: "cost / 1k requests", value: (u, v) => usd(v) },
        { label: "predicted error", stroke: "#2454c5", spanGaps: true, points: { show: true, size: 5 }, value: (u, v) => pct(v) },
        { label: "λ", stroke: "#d92d20", points: { show: true, size: 11, fill: "#d92d20" }, paths: () => null, value: (u, v) => pct(v) },
        { label: curve.baseline ? "always " + curve.baseline.model : "dearest", stroke: "#667085",
          points: { show: true, size: 9, fill: "#fff" }, paths: () => null, value: (u, v) => pct(v) },
      ],
    }, curveData(marked), target);
  }

  function show(index) {
    const p = positions[index];
    if (!p) return;
    const input = document.getElementById("lam-input");
    const out = document.getElementById("lam-readout");
    if (input) input.value = p.lam;
    const shares = Object.entries(p.shares || {}).map(([m, s]) => m + " " + pct(s)).join(", ");
    if (out) out.textContent = "λ = " + p.lam + " · predicted error " + pct(p.error) + " · " + usd(p.cost_usd * 1000)
      + " per 1k requests" + (shares ? " · " + shares : "");
    drawCurve(p);
  }

  function drawTraffic() {
    const target = document.getElementById("chart-traffic");
    if (!target || typeof uPlot === "undefined" || !traffic || !traffic.requests) return;
    const models = Object.keys(traffic.series);
    const totals = traffic.t.map((_, i) => models.reduce((s, m) => s + traffic.series[m][i], 0));
    const shares = models.map((m) => traffic.series[m].map((v, i) => (totals[i] ? v / totals[i] : null)));
    target.innerHTML = "";
    new uPlot({
      width: Math.max(target.clientWidth, 240),
      height: 220,
      scales: { x: { time: true }, y: { range: [0, 1] } },
      axes: [{}, { size: 60, values: (u, t) => t.map(pct) }],
      // Hours without routed traffic are gaps; sparse hours still show as points.
      series: [{}, ...models.map((m, i) => ({ label: m, stroke: palette[i % palette.length], points: { show: true, size: 5 },
        value: (u, v) => pct(v) }))],
    }, [traffic.t, ...shares], target);
  }

  function init() {
    const slider = document.getElementById("lam-slider");
    const saved = curve && curve.current ? curve.current : positions[0];
    drawCurve(saved);
    drawTraffic();
    if (slider) slider.addEventListener("input", () => show(Number(slider.value)));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
