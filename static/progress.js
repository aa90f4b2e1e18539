// Live job progress over the progress websocket (opentracy_site/progress_consumer.py).
// An element with data-progress="/ws/projects/<slug>/progress/<kind>/<id>" gets the job's state:
// its [data-p] children are filled (bar, pct, status, phase, step, loss, eta, message) and an
// "opentracy:progress" event carries the whole state (the loss chart listens). While the socket
// delivers, data-live is set and the fragment's htmx polling (hx-trigger "every Ns [!this.dataset.live]")
// pauses; when the socket closes or fails it resumes. A finished job reloads the fragment from
// data-progress-refresh (or the page, with data-progress-refresh="page").
(function () {
  "use strict";
  const FINISHED = new Set(["done", "failed", "cancelled"]);
  const REFUSED = new Set([4401, 4403, 4404]); // never retried
  const sockets = {}; // path -> {ws, state, live, done, tries}

  function eta(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.round(seconds);
    if (s < 60) return "about " + s + " s left";
    if (s < 3600) return "about " + Math.round(s / 60) + " min left";
    return "about " + (s / 3600).toFixed(1) + " h left";
  }

  function text(state, key) {
    switch (key) {
      case "pct": return state.progress === undefined ? null : Math.round(state.progress * 100) + "%";
      case "eta": return eta(state.eta_s);
      case "step": return state.step === undefined ? null : "step " + state.step + (state.steps ? " of " + state.steps : "");
      case "loss": return state.loss === undefined ? null : "loss " + Number(state.loss).toFixed(4);
      default: return state[key] === undefined ? null : String(state[key]);
    }
  }

  function apply(el, state) {
    el.querySelectorAll("[data-p]").forEach(function (node) {
      const key = node.dataset.p;
      if (key === "bar") {
        if (state.progress !== undefined) node.value = state.progress;
        return;
      }
      const value = text(state, key);
      if (value !== null) node.textContent = value;
    });
    el.dispatchEvent(new CustomEvent("opentracy:progress", { detail: state, bubbles: true }));
  }

  function elements(path) {
    return Array.from(document.querySelectorAll("[data-progress]")).filter((el) => el.dataset.progress === path);
  }

  function finish(path) {
    elements(path).forEach(function (el) {
      delete el.dataset.live;
      const url = el.dataset.progressRefresh;
      if (url === "page") window.location.reload();
      else if (url && window.htmx) window.htmx.ajax("GET", url, { target: el, swap: "outerHTML" });
    });
  }

  function open(path, s) {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + window.location.host + path);
    s.ws = ws;
    ws.onmessage = function (message) {
      const event = JSON.parse(message.data);
      if (event.points && s.state.points) { // keep every point seen, newest last, once per step
        const last = s.state.points.length ? s.state.points[s.state.points.length - 1].step : -Infinity;
        event.points = s.state.points.concat(event.points.filter((p) => p.step > last));
      }
      Object.assign(s.state, event);
      s.live = true;
      s.tries = 0;
      elements(path).forEach(function (el) {
        el.dataset.live = "1";
        apply(el, s.state);
      });
      if (FINISHED.has(event.status)) {
        s.done = true;
        ws.close();
        finish(path);
      }
    };
    ws.onclose = function (closed) {
      s.live = false;
      elements(path).forEach((el) => delete el.dataset.live); // htmx polling takes over
      if (s.done || REFUSED.has(closed.code) || s.tries >= 5) return;
      s.tries += 1;
      window.setTimeout(() => open(path, s), 1000 * 2 ** s.tries);
    };
  }

  function bind(el) {
    const path = el.dataset.progress;
    if (!path || !window.WebSocket) return;
    let s = sockets[path];
    if (!s) {
      s = sockets[path] = { ws: null, state: {}, live: false, done: false, tries: 0 };
      open(path, s);
    } else if (s.live) {
      el.dataset.live = "1"; // a fragment swapped in by a poll while the socket is up
      apply(el, s.state);
    }
  }

  function scan(root) {
    if (root.matches && root.matches("[data-progress]")) bind(root);
    if (root.querySelectorAll) root.querySelectorAll("[data-progress]").forEach(bind);
  }

  document.addEventListener("DOMContentLoaded", () => scan(document));
  document.addEventListener("htmx:load", (e) => scan(e.target));
})();
