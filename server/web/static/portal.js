/* OpenAstro portal pages: fetch the read API and draw with OAPlot. window.oaPlots holds the plots (tests read it). */
(function () {
  "use strict";
  window.oaPlots = {};
  var PLOT_COLUMNS = "bjd_tdb,jd_utc,mag,mag_err,flux,flux_err,id";  // what the plots need, no more
  var COLORS = ["#1f4e9c", "#c0392b", "#27865a", "#8e44ad", "#d35400", "#2c3e50"];
  function getJSON(url) { return fetch(url, {credentials: "same-origin"}).then(function (r) {
    if (!r.ok) return r.json().then(function (b) { throw new Error((b.error && b.error.message) || r.statusText); });
    return r.json(); }); }
  function offsetOf(values) { var m = Infinity; values.forEach(function (v) { if (v !== null && v < m) m = v; });
    return isFinite(m) ? Math.floor(m) : 0; }

  function lightCurve(sec) {
    var tid = sec.dataset.target, bands = Object.keys(JSON.parse(sec.dataset.bands));
    Promise.all(bands.map(function (b) { return getJSON("/api/v1/targets/" + tid + "/lightcurve?band=" + encodeURIComponent(b)
      + "&columns=" + PLOT_COLUMNS); }))
      .then(function (curves) {
        var useBjd = curves.every(function (lc) { return lc.columns.bjd_tdb.every(function (v) { return v !== null; }); });
        var tcol = useBjd ? "bjd_tdb" : "jd_utc", all = [];
        curves.forEach(function (lc) { all = all.concat(lc.columns[tcol]); });
        var t0 = offsetOf(all);
        var useMag = curves.every(function (lc) { return lc.columns.mag.some(function (v) { return v !== null; }); });
        var series = curves.map(function (lc, i) {
          var y = useMag ? lc.columns.mag : lc.columns.flux, e = useMag ? lc.columns.mag_err : lc.columns.flux_err;
          return {label: lc.band + " (" + lc.n + ")", band: lc.band, color: COLORS[i % COLORS.length],
                  x: lc.columns[tcol].map(function (v) { return v === null ? null : v - t0; }), y: y, yerr: e,
                  ids: lc.columns.id, t: lc.columns[tcol]};
        });
        var plot = new OAPlot(document.getElementById("lightcurve"), {series: series, invertY: useMag,
          xlabel: (useBjd ? "BJD_TDB" : "JD (UTC)") + " − " + t0 + " (d)", ylabel: useMag ? "magnitude (mag)" : "normalised flux"});
        plot.t0 = t0; window.oaPlots.lightcurve = plot;
        document.querySelectorAll("input.band").forEach(function (cb) { cb.addEventListener("change", function () {
          series.forEach(function (s) { if (s.band === cb.value) s.hidden = !cb.checked; }); plot.reset(); }); });
        document.getElementById("errorbars").addEventListener("change", function (e) { plot.showErrors = e.target.checked; plot.draw(); });
        document.getElementById("lc-reset").addEventListener("click", function () { plot.reset(); });
        window.oaLightCurves = curves;
        phaseFold();
      }).catch(function (err) { sec.insertAdjacentHTML("beforeend", "<p class='error'>" + err.message + "</p>"); });
  }

  var pgram = null;
  function periodogram(sec) {
    getJSON("/api/v1/targets/" + sec.dataset.target + "/periodogram").then(function (pg) {
      pgram = pg;
      var period = pg.best_period_d;
      document.getElementById("pg-summary").textContent = "Band " + (pg.band || "all") + ": best period " + period.toPrecision(8) + " d"
        + (pg.best_period_err_d ? " ± " + pg.best_period_err_d.toPrecision(2) + " d" : "")
        + (pg.fap !== null ? ", false-alarm probability " + pg.fap.toExponential(2) + " (" + pg.fap_method + ")" : "");
      var x = pg.frequency_per_d;
      window.oaPlots.periodogram = new OAPlot(document.getElementById("periodogram"), {xlabel: "frequency (1/d)",
        ylabel: "Lomb-Scargle power", series: [{x: x, y: pg.power, mode: "line", color: "#1f4e9c"},
          {x: [1 / period], y: [Math.max.apply(null, pg.power.filter(function (v) { return v !== null; }))], color: "#c00", label: "best period"}]});
      phaseFold();
    }).catch(function (err) { sec.insertAdjacentHTML("beforeend", "<p class='error'>" + err.message + "</p>"); });
  }
  function phaseFold() {
    var cv = document.getElementById("phased"); if (!cv || !pgram || !window.oaLightCurves) return;
    var curves = window.oaLightCurves.filter(function (lc) { return !pgram.band || lc.band === pgram.band; });
    var P = pgram.best_period_d, t0 = window.oaPlots.lightcurve.t0, plot = window.oaPlots.lightcurve;
    var series = curves.map(function (lc, i) { var s = plot.opts.series.filter(function (q) { return q.band === lc.band; })[0];
      return {label: lc.band, color: s.color, x: s.t.map(function (t) { if (t === null) return null; var ph = ((t - t0) / P) % 1; return ph < 0 ? ph + 1 : ph; }),
              y: s.y, yerr: s.yerr}; });
    window.oaPlots.phased = new OAPlot(cv, {series: series, invertY: plot.opts.invertY,
      xlabel: "phase at P = " + P.toPrecision(8) + " d (epoch " + (plot.opts.xlabel.split(" − ")[0]) + " " + t0 + ")", ylabel: plot.opts.ylabel});
  }

  function oc(sec) {
    getJSON("/api/v1/targets/" + sec.dataset.target + "/transit-times?planet=" + encodeURIComponent(sec.dataset.planet)).then(function (tt) {
      var e = tt.ephemeris, items = tt.items;
      document.getElementById("oc-summary").textContent = e ? "Linear ephemeris: T0 = " + e.t0.toFixed(6) + " BJD_TDB, P = " + e.period.toFixed(7) + " d ("
        + items.length + " transits)" : "fewer than two epochs: no ephemeris";
      var series = [{label: "observed", color: "#1f4e9c", x: items.map(function (r) { return r.epoch; }),
        y: items.map(function (r) { return r.o_minus_c_min; }), yerr: items.map(function (r) { return r.sigma_d * 1440; })}];
      var model = items.filter(function (r) { return r.model_o_minus_c_min !== null; });
      if (model.length) series.push({label: "model", color: "#c0392b", mode: "line", x: model.map(function (r) { return r.epoch; }),
        y: model.map(function (r) { return r.model_o_minus_c_min; })});
      series.push({color: "#888", mode: "line", x: [items[0].epoch, items[items.length - 1].epoch], y: [0, 0]});
      window.oaPlots.oc = new OAPlot(document.getElementById("oc"), {series: series, xlabel: "epoch (transit number)",
        ylabel: "O − C (min)"});
    }).catch(function (err) { sec.insertAdjacentHTML("beforeend", "<p class='error'>" + err.message + "</p>"); });
  }

  function campaign(sec) {
    var st = sec.dataset.status;
    if (st === "done" || st === "failed" || st === "cancelled") return;
    setTimeout(function poll() {
      getJSON("/api/v1/campaigns/" + sec.dataset.campaign).then(function (c) {
        document.getElementById("campaign-status").textContent = c.status;
        document.getElementById("campaign-progress").textContent = c.finished + "/" + c.total;
        var bar = document.getElementById("campaign-bar"); bar.max = c.total || 1; bar.value = c.finished;
        if (c.status === "done" || c.status === "failed" || c.status === "cancelled") { window.location.reload(); }
        else setTimeout(poll, 1500);
      }).catch(function () { setTimeout(poll, 3000); });
    }, 1500);
  }

  // TAN (gnomonic) world coordinates of a pixel from the grid's FITS header (CRPIX/CRVAL/CD or CDELT+PC)
  function tanWorld(h, px, py) {
    var d2r = Math.PI / 180, dx = px + 1 - h.CRPIX1, dy = py + 1 - h.CRPIX2;
    var cd11 = h.CD1_1, cd12 = h.CD1_2 || 0, cd21 = h.CD2_1 || 0, cd22 = h.CD2_2;
    if (cd11 === undefined) { var c1 = h.CDELT1 || 1, c2 = h.CDELT2 || 1;
      cd11 = c1 * (h.PC1_1 === undefined ? 1 : h.PC1_1); cd12 = c1 * (h.PC1_2 || 0); cd21 = c2 * (h.PC2_1 || 0); cd22 = c2 * (h.PC2_2 === undefined ? 1 : h.PC2_2); }
    var x = (cd11 * dx + cd12 * dy) * d2r, y = (cd21 * dx + cd22 * dy) * d2r;
    var ra0 = h.CRVAL1 * d2r, dec0 = h.CRVAL2 * d2r, rho = Math.sqrt(x * x + y * y);
    if (rho === 0) return [h.CRVAL1, h.CRVAL2];
    var c = Math.atan(rho), sc = Math.sin(c), cc = Math.cos(c);
    var dec = Math.asin(cc * Math.sin(dec0) + y * sc * Math.cos(dec0) / rho);
    var ra = ra0 + Math.atan2(x * sc, rho * Math.cos(dec0) * cc - y * Math.sin(dec0) * sc);
    ra = ra / d2r; ra = ((ra % 360) + 360) % 360; return [ra, dec / d2r];
  }
  function sexa(v, hours) { var s = v < 0 ? "-" : (hours ? "" : "+"); v = Math.abs(v) / (hours ? 15 : 1);
    var a = Math.floor(v), m = Math.floor((v - a) * 60), sec = ((v - a) * 60 - m) * 60;
    return s + a + (hours ? "h" : "°") + ("0" + m).slice(-2) + (hours ? "m" : "′") + (sec < 10 ? "0" : "") + sec.toFixed(hours ? 2 : 1) + (hours ? "s" : "″"); }
  function stack(view) {
    var img = document.getElementById("stack-img"), h = JSON.parse(view.dataset.wcs), shape = JSON.parse(view.dataset.shape);
    var scale = 1, tx = 0, ty = 0, drag = null;
    function apply() { img.style.transform = "translate(" + tx + "px," + ty + "px) scale(" + scale + ")"; }
    img.addEventListener("load", function () { scale = Math.min(view.clientWidth / img.naturalWidth, view.clientHeight / img.naturalHeight); apply(); });
    view.addEventListener("wheel", function (e) { e.preventDefault(); var r = view.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
      var f = e.deltaY < 0 ? 1.25 : 0.8; tx = mx - (mx - tx) * f; ty = my - (my - ty) * f; scale *= f; apply(); });
    view.addEventListener("mousedown", function (e) { drag = {x: e.clientX - tx, y: e.clientY - ty}; });
    window.addEventListener("mouseup", function () { drag = null; });
    view.addEventListener("mousemove", function (e) {
      if (drag) { tx = e.clientX - drag.x; ty = e.clientY - drag.y; apply(); }
      var r = view.getBoundingClientRect(), ix = (e.clientX - r.left - tx) / scale, iy = (e.clientY - r.top - ty) / scale;
      var sx = shape[1] / img.naturalWidth, sy = shape[0] / img.naturalHeight;
      var px = ix * sx - 0.5, py = (img.naturalHeight - iy) * sy - 0.5;  // FITS row 0 is at the bottom of the preview
      if (px < -0.5 || py < -0.5 || px > shape[1] - 0.5 || py > shape[0] - 0.5) return;
      var w = tanWorld(h, px, py);
      document.getElementById("stack-coords").textContent = "x " + px.toFixed(1) + ", y " + py.toFixed(1) + " → RA " + w[0].toFixed(5) + "° (" + sexa(w[0], true)
        + "), Dec " + w[1].toFixed(5) + "° (" + sexa(w[1], false) + ")";
    });
  }
  window.oaTanWorld = tanWorld;

  document.addEventListener("DOMContentLoaded", function () {
    var s;
    if ((s = document.getElementById("lc-section"))) lightCurve(s);
    if ((s = document.getElementById("pg-section"))) periodogram(s);
    if ((s = document.getElementById("oc-section"))) oc(s);
    if ((s = document.getElementById("campaign"))) campaign(s);
    if ((s = document.getElementById("stack-view"))) stack(s);
  });
})();
