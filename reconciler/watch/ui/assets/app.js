// sitekeeper's dashboard: live updates over server-sent events (/events).
// The pages work without this script; it only moves progress bars and
// phases as changes run, and says when a site's change ended.
"use strict";
(function () {
  if (!window.EventSource) { return; }
  var live = document.getElementById("live");
  function say(text) { if (live) { live.textContent = text; } }
  function set(el, field, value) {
    var f = el.querySelector('[data-field="' + field + '"]');
    if (f && value !== undefined && value !== null) { f.textContent = String(value); }
  }
  var source = new EventSource("/events");
  source.addEventListener("site", function (e) {
    var ev;
    try { ev = JSON.parse(e.data); } catch (err) { return; }
    var nodes = document.querySelectorAll("[data-site]");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      if (el.getAttribute("data-site") !== ev.site) { continue; }
      var bar = el.querySelector("progress");
      if (bar) { bar.value = ev.percent; bar.textContent = ev.percent + "%"; }
      set(el, "phase", ev.phase);
      set(el, "percent", ev.percent + "%");
      set(el, "busy", ev.busy ? "working" : "");
      if (ev.outcome) { set(el, "outcome", ev.outcome); }
      if (ev.version) { set(el, "version", ev.version); }
    }
    if (ev.outcome) { say(ev.site + ": " + ev.outcome + " (" + ev.phase + ")"); }
  });
  source.addEventListener("open", function () { say("Live updates on."); });
  source.addEventListener("error", function () { say("Live updates paused; reconnecting."); });
})();
