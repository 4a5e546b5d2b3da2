// Celeriac's dashboard: live parts by server-sent events while the tab is visible, charts
// drawn with uPlot from the data the page carries, and the page's token on htmx requests.
(function () {
  "use strict";
  var sources = [];

  function openLive() {
    closeLive();
    if (document.hidden) return;
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var es = new EventSource(el.getAttribute("data-live"));
      es.onmessage = function (e) {
        el.innerHTML = e.data;
        el.setAttribute("data-updated", String(Date.now()));
        if (window.htmx) window.htmx.process(el);
        drawCharts(el);
      };
      sources.push(es);
    });
  }

  function closeLive() {
    sources.forEach(function (es) { es.close(); });
    sources = [];
  }

  var palette = ["#2f855a", "#c53030", "#2b6cb0", "#b7791f", "#6b46c1"];

  function drawCharts(root) {
    if (!window.uPlot) return;
    (root || document).querySelectorAll("figure.chart[data-chart]").forEach(function (fig) {
      if (fig.getAttribute("data-drawn")) return;
      var d;
      try { d = JSON.parse(fig.getAttribute("data-chart")); } catch (e) { return; }
      if (!d.x || d.x.length === 0) return;
      var series = [{}];
      var data = [d.x];
      d.lines.forEach(function (l, i) {
        series.push({ label: l.label, stroke: palette[i % palette.length], width: 1.5, points: { show: false } });
        data.push(l.values);
      });
      var markers = d.markers || [];
      var opts = {
        width: Math.max(320, fig.clientWidth - 8),
        height: 220,
        series: series,
        axes: [{}, { size: 50 }],
        hooks: {
          draw: [function (u) {
            var ctx = u.ctx;
            ctx.save();
            ctx.strokeStyle = "#718096";
            ctx.setLineDash([4, 4]);
            markers.forEach(function (t) {
              var x = u.valToPos(t, "x", true);
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
            });
            ctx.restore();
          }]
        }
      };
      var fallback = fig.querySelector(".fallback");
      if (fallback) fallback.hidden = true;
      new window.uPlot(opts, data, fig);
      fig.setAttribute("data-drawn", "1");
    });
  }

  function start() {
    openLive();
    drawCharts(document);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) closeLive(); else openLive();
  });
  // After htmx swaps in another page (boosted links and forms), follow its live parts.
  document.addEventListener("htmx:afterSettle", start);
  document.addEventListener("htmx:configRequest", function (e) {
    var token = document.body.getAttribute("data-csrf");
    if (token) e.detail.headers["X-CSRF-Token"] = token;
  });
  // A page that answers with an error status (a search that does not read, a job gone, a
  // refusal) is still a page: show it, as a plain navigation would. htmx swaps no 4xx/5xx
  // answer by default, and the click would seem to do nothing.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var type = e.detail.xhr.getResponseHeader("Content-Type") || "";
    if (e.detail.boosted && e.detail.xhr.status >= 400 && type.indexOf("text/html") === 0) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });
  // "Copy" buttons copy the text of the element they name.
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-copy]");
    if (!b) return;
    var src = document.getElementById(b.getAttribute("data-copy"));
    if (src && navigator.clipboard) {
      navigator.clipboard.writeText(src.textContent.trim());
      b.textContent = "copied";
    }
  });
  // "Select all" boxes tick every box of their form.
  document.addEventListener("change", function (e) {
    var all = e.target.closest("[data-select-all]");
    if (!all) return;
    var form = all.closest("form");
    if (!form) return;
    form.querySelectorAll("input[type=checkbox][name=id]").forEach(function (c) {
      c.checked = all.checked;
    });
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
