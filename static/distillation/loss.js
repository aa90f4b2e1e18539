// Draws a distillation job's loss history with uPlot from the data embedded by json_script
// ("loss-series"), again after each htmx swap of the progress fragment, and grows it with the
// points pushed over the progress socket (static/progress.js's "opentracy:progress" event).
(function () {
  "use strict";
  const colours = { loss: "#2454c5", kl: "#dc6803", reward: "#0e9384", sft_loss: "#7a5af8" };
  const KEYS = Object.keys(colours);
  let series = null; // the drawn data: {step: [...], loss: [...], ...}

  function render() {
    const target = document.getElementById("chart-loss");
    if (!series || !target || typeof uPlot === "undefined" || !series.step || !series.step.length) return;
    const keys = Object.keys(series).filter((k) => k !== "step");
    target.innerHTML = "";
    new uPlot({
      width: Math.max(target.clientWidth, 240),
      height: 220,
      scales: { x: { time: false } },
      series: [{ label: "step" }, ...keys.map((k) => ({ label: k, stroke: colours[k] || "#667085" }))],
    }, [series.step, ...keys.map((k) => series[k])], target);
  }

  function draw() {
    const el = document.getElementById("loss-series");
    if (!el) return;
    series = JSON.parse(el.textContent);
    render();
  }

  function grow(event) {
    const points = (event.detail && event.detail.points) || [];
    if (!points.length) return;
    if (!series || !series.step) series = { step: [] };
    const last = series.step.length ? series.step[series.step.length - 1] : -Infinity;
    const fresh = points.filter((p) => p.step > last);
    if (!fresh.length) return;
    KEYS.forEach(function (k) {
      if (!(k in series) && fresh.some((p) => k in p)) series[k] = series.step.map(() => null);
    });
    fresh.forEach(function (p) {
      series.step.push(p.step);
      Object.keys(series).forEach(function (k) {
        if (k !== "step") series[k].push(k in p ? p[k] : null);
      });
    });
    render();
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("opentracy:progress", grow);
  document.body && document.body.addEventListener("htmx:afterSettle", draw);
  window.addEventListener("load", draw);
})();
