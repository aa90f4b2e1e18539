// Draws a distillation job's loss history with uPlot from the data embedded by json_script
// ("loss-series"), again after each htmx swap of the progress fragment.
(function () {
  "use strict";
  const colours = { loss: "#2454c5", kl: "#dc6803", reward: "#0e9384", sft_loss: "#7a5af8" };

  function draw() {
    const el = document.getElementById("loss-series");
    const target = document.getElementById("chart-loss");
    if (!el || !target || typeof uPlot === "undefined") return;
    const d = JSON.parse(el.textContent);
    if (!d.step || !d.step.length) return;
    const keys = Object.keys(d).filter((k) => k !== "step");
    target.innerHTML = "";
    new uPlot({
      width: Math.max(target.clientWidth, 240),
      height: 220,
      scales: { x: { time: false } },
      series: [{ label: "step" }, ...keys.map((k) => ({ label: k, stroke: colours[k] || "#667085" }))],
    }, [d.step, ...keys.map((k) => d[k])], target);
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.body && document.body.addEventListener("htmx:afterSettle", draw);
  window.addEventListener("load", draw);
})();
