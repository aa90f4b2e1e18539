// Keyboard curation on the dataset page (no dependencies): j/n next row, p previous, k keep,
// d drop, e edit the answer, Esc cancel an edit, Ctrl+Enter save it. Rows swapped by htmx keep
// their place: the current row is remembered by id.
(function () {
  "use strict";
  var currentId = null;
  var advanceFrom = null; // the row whose keep/drop, once swapped in, moves the selection on

  function rows() { return Array.prototype.slice.call(document.querySelectorAll(".ds-row")); }

  function current() {
    var el = currentId && document.getElementById(currentId);
    return el || null;
  }

  function select(el) {
    rows().forEach(function (r) { r.classList.remove("current"); });
    if (!el) return;
    currentId = el.id;
    el.classList.add("current");
    el.scrollIntoView({ block: "nearest" });
    if (!el.contains(document.activeElement)) el.focus({ preventScroll: true });
  }

  function move(step) {
    var all = rows();
    if (!all.length) return;
    var i = all.indexOf(current());
    var next = i < 0 ? all[0] : all[Math.min(Math.max(i + step, 0), all.length - 1)];
    if (i === all.length - 1 && step > 0) {
      var more = document.querySelector("#more-rows a");
      if (more) more.click();
    }
    select(next);
  }

  function press(selector) {
    var row = current();
    var target = row && row.querySelector(selector);
    if (target) target.click();
  }

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT" || el.isContentEditable);
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.target && ev.target.tagName === "TEXTAREA" && ev.target.closest(".ds-edit-form")) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        ev.target.form.requestSubmit();
      } else if (ev.key === "Escape") {
        ev.preventDefault();
        var cancel = ev.target.form.querySelector(".ds-cancel");
        if (cancel) cancel.click();
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
    var keys = {
      j: function () { move(1); },
      n: function () { move(1); },
      p: function () { move(-1); },
      k: function () { advanceFrom = currentId; press(".ds-keep"); },
      d: function () { advanceFrom = currentId; press(".ds-drop"); },
      e: function () { press(".ds-edit"); },
    };
    var action = keys[ev.key];
    if (!action) return;
    ev.preventDefault();
    if (!current() && ev.key !== "j" && ev.key !== "n") select(rows()[0]);
    action();
  });

  document.addEventListener("click", function (ev) {
    var row = ev.target.closest && ev.target.closest(".ds-row");
    if (row) select(row);
  });

  // After htmx replaces a row (keep, drop, edit, override), mark it current again; after a keep
  // or drop from the keyboard, move on to the next row so a person can go k, k, d, k... down the
  // page. Only the row's own swap counts (the progress counter comes in the same response).
  document.addEventListener("htmx:afterSwap", function (ev) {
    var target = ev.detail && ev.detail.target;
    if (!target || !target.id || target.id.indexOf("row-") !== 0 || target.id !== currentId) return;
    var el = current();
    if (!el) return;
    el.classList.add("current");
    var editor = el.querySelector("textarea");
    if (editor) { editor.focus(); return; }
    if (advanceFrom === el.id) {
      advanceFrom = null;
      move(1);
    } else {
      el.focus({ preventScroll: true });
    }
  });
})();
