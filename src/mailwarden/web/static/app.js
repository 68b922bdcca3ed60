// mailwarden dashboard: the only script, and optional (every form works without it).
// The host and days selectors apply at once; close/open buttons ask first.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  for (const id of ["host-select", "days-select"]) {
    const el = document.getElementById(id);
    if (el) el.addEventListener("change", function () { el.form.submit(); });
  }
  for (const b of document.querySelectorAll("button.close-btn, button.open-btn, #open-submit")) {
    b.addEventListener("click", function (ev) {
      const form = b.form;
      const p = form.querySelector("[name=provider]").value;
      const what = b.classList.contains("close-btn") ? "Close the breaker of " + p + " and release its parked mail?" : "Park all mail to " + p + "?";
      if (!window.confirm(what)) ev.preventDefault();
    });
  }
});
