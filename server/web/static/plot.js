/* OpenAstro portal: a small canvas plotter (ours; no external libraries).
   OAPlot(canvas, opts): opts = {xlabel, ylabel, invertY, series: [{x, y, yerr, color, mode: 'points'|'line', label}]}
   Drag a rectangle to zoom, double-click (or reset()) to show everything. Axis labels carry units. */
(function () {
  "use strict";
  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / n)));
    var err = (n * step) / span;
    if (err <= 0.15) step *= 10; else if (err <= 0.35) step *= 5; else if (err <= 0.75) step *= 2;
    var ticks = [], t = Math.ceil(lo / step) * step;
    for (; t <= hi + step * 1e-9; t += step) ticks.push(t);
    return {ticks: ticks, step: step};
  }
  function fmt(v, step) {
    var d = Math.max(0, -Math.floor(Math.log10(step)) + (step / Math.pow(10, Math.floor(Math.log10(step))) < 1.5 ? 0 : 0));
    return Math.abs(v) < 1e-12 ? "0" : v.toFixed(Math.min(d, 8));
  }
  function OAPlot(canvas, opts) {
    this.canvas = canvas; this.opts = opts; this.ctx = canvas.getContext("2d");
    this.margin = {l: 78, r: 16, t: 14, b: 52};
    this.showErrors = opts.showErrors !== false;
    this.reset(); this.bind();
  }
  OAPlot.prototype.visibleSeries = function () { return this.opts.series.filter(function (s) { return !s.hidden; }); };
  OAPlot.prototype.extent = function () {
    var xlo = Infinity, xhi = -Infinity, ylo = Infinity, yhi = -Infinity;
    this.visibleSeries().forEach(function (s) {
      for (var i = 0; i < s.x.length; i++) {
        var x = s.x[i], y = s.y[i], e = (s.yerr && s.yerr[i]) || 0;
        if (x === null || y === null || !isFinite(x) || !isFinite(y)) continue;
        if (x < xlo) xlo = x; if (x > xhi) xhi = x;
        if (y - e < ylo) ylo = y - e; if (y + e > yhi) yhi = y + e;
      }
    });
    if (!isFinite(xlo)) { xlo = 0; xhi = 1; ylo = 0; yhi = 1; }
    var px = (xhi - xlo) * 0.03 || 0.5, py = (yhi - ylo) * 0.06 || 0.5;
    return {x0: xlo - px, x1: xhi + px, y0: ylo - py, y1: yhi + py};
  };
  OAPlot.prototype.reset = function () { this.view = this.extent(); this.draw(); };
  OAPlot.prototype.X = function (x) { var m = this.margin, w = this.canvas.width - m.l - m.r;
    return m.l + (x - this.view.x0) / (this.view.x1 - this.view.x0) * w; };
  OAPlot.prototype.Y = function (y) { var m = this.margin, h = this.canvas.height - m.t - m.b;
    var f = (y - this.view.y0) / (this.view.y1 - this.view.y0); if (this.opts.invertY) f = 1 - f;
    return m.t + (1 - f) * h; };
  OAPlot.prototype.inv = function (px, py) { var m = this.margin, w = this.canvas.width - m.l - m.r, h = this.canvas.height - m.t - m.b;
    var fx = (px - m.l) / w, fy = 1 - (py - m.t) / h; if (this.opts.invertY) fy = 1 - fy;
    return {x: this.view.x0 + fx * (this.view.x1 - this.view.x0), y: this.view.y0 + fy * (this.view.y1 - this.view.y0)}; };
  OAPlot.prototype.draw = function () {
    var c = this.ctx, cv = this.canvas, m = this.margin, self = this, v = this.view;
    c.clearRect(0, 0, cv.width, cv.height); c.fillStyle = "#fff"; c.fillRect(0, 0, cv.width, cv.height);
    c.save(); c.beginPath(); c.rect(m.l, m.t, cv.width - m.l - m.r, cv.height - m.t - m.b); c.clip();
    var drawn = 0;
    this.visibleSeries().forEach(function (s) {
      c.strokeStyle = c.fillStyle = s.color || "#1f4e9c";
      if (s.mode === "line") {
        c.beginPath(); var started = false;
        for (var i = 0; i < s.x.length; i++) { if (s.y[i] === null) continue; var X = self.X(s.x[i]), Y = self.Y(s.y[i]);
          if (!started) { c.moveTo(X, Y); started = true; } else c.lineTo(X, Y); }
        c.lineWidth = 1; c.stroke(); return;
      }
      for (var j = 0; j < s.x.length; j++) {
        var x = s.x[j], y = s.y[j]; if (x === null || y === null) continue;
        if (x < v.x0 || x > v.x1 || y < Math.min(v.y0, v.y1) || y > Math.max(v.y0, v.y1)) continue;
        var px = self.X(x), py = self.Y(y);
        if (self.showErrors && s.yerr && s.yerr[j]) { c.beginPath(); c.moveTo(px, self.Y(y - s.yerr[j])); c.lineTo(px, self.Y(y + s.yerr[j])); c.lineWidth = 0.7; c.stroke(); }
        c.fillRect(px - 1.5, py - 1.5, 3, 3); drawn++;
      }
    });
    c.restore();
    this.canvas.dataset.pointsDrawn = String(drawn);
    // axes
    c.strokeStyle = "#222"; c.fillStyle = "#222"; c.lineWidth = 1; c.font = "12px sans-serif";
    c.strokeRect(m.l, m.t, cv.width - m.l - m.r, cv.height - m.t - m.b);
    var xt = niceTicks(v.x0, v.x1, 8), yt = niceTicks(Math.min(v.y0, v.y1), Math.max(v.y0, v.y1), 6);
    c.textAlign = "center"; c.textBaseline = "top";
    xt.ticks.forEach(function (t) { var X = self.X(t); c.beginPath(); c.moveTo(X, cv.height - m.b); c.lineTo(X, cv.height - m.b + 5); c.stroke(); c.fillText(fmt(t, xt.step), X, cv.height - m.b + 7); });
    c.textAlign = "right"; c.textBaseline = "middle";
    yt.ticks.forEach(function (t) { var Y = self.Y(t); c.beginPath(); c.moveTo(m.l - 5, Y); c.lineTo(m.l, Y); c.stroke(); c.fillText(fmt(t, yt.step), m.l - 7, Y); });
    c.textAlign = "center"; c.textBaseline = "bottom"; c.fillText(this.opts.xlabel || "", m.l + (cv.width - m.l - m.r) / 2, cv.height - 4);
    c.save(); c.translate(14, m.t + (cv.height - m.t - m.b) / 2); c.rotate(-Math.PI / 2); c.textBaseline = "top"; c.fillText(this.opts.ylabel || "", 0, 0); c.restore();
    // legend
    var lx = m.l + 8, ly = m.t + 6; c.textAlign = "left"; c.textBaseline = "top";
    this.visibleSeries().forEach(function (s) { if (!s.label) return; c.fillStyle = s.color || "#1f4e9c"; c.fillRect(lx, ly + 4, 8, 8); c.fillStyle = "#222"; c.fillText(s.label, lx + 12, ly); ly += 16; });
  };
  OAPlot.prototype.bind = function () {
    var self = this, cv = this.canvas, start = null, img = null;
    function pos(e) { var r = cv.getBoundingClientRect(); return {x: (e.clientX - r.left) * cv.width / r.width, y: (e.clientY - r.top) * cv.height / r.height}; }
    cv.addEventListener("mousedown", function (e) { start = pos(e); img = self.ctx.getImageData(0, 0, cv.width, cv.height); });
    cv.addEventListener("mousemove", function (e) { if (!start) return; var p = pos(e); self.ctx.putImageData(img, 0, 0);
      self.ctx.strokeStyle = "#c00"; self.ctx.strokeRect(start.x, start.y, p.x - start.x, p.y - start.y); });
    cv.addEventListener("mouseup", function (e) { if (!start) return; var p = pos(e);
      if (Math.abs(p.x - start.x) > 4 && Math.abs(p.y - start.y) > 4) {
        var a = self.inv(start.x, start.y), b = self.inv(p.x, p.y);
        self.view = {x0: Math.min(a.x, b.x), x1: Math.max(a.x, b.x), y0: Math.min(a.y, b.y), y1: Math.max(a.y, b.y)};
      }
      start = null; self.draw(); });
    cv.addEventListener("dblclick", function () { self.reset(); });
  };
  window.OAPlot = OAPlot;
})();
