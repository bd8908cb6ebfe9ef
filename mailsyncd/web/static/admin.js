/* mailsyncd admin dashboard: live numbers, bars and throughput charts.
 *
 * Polls the page's data-status URL (/admin/status.json...) every data-poll seconds and updates the
 * elements marked by the server: data-d (a domain), data-a (an account) or data-t (the totals), with
 * data-f (a field of the status document, schema 1) and data-fmt (how to show it).  Charts (uPlot,
 * vendored) show messages per minute per domain: /admin/series.json at load, then one point per poll.
 * No inline script or style: the page's CSP allows this origin only.  Without it, the page still works.
 */
(function () {
  "use strict";

  var body = document.body;
  var statusUrl = body.getAttribute("data-status");
  if (!statusUrl || !window.fetch) {
    return;
  }
  var every = (parseInt(body.getAttribute("data-poll"), 10) || 5) * 1000;
  var words = {};
  try {
    words = JSON.parse(body.getAttribute("data-words") || "{}");
  } catch (e) {
    words = {};
  }
  var zh = body.getAttribute("data-lang") === "zh";
  var sep = zh ? "" : " ";
  var nf = new Intl.NumberFormat("en-US");
  var liveEl = document.getElementById("live");
  var timer = null;

  function word(key) {
    return words[key] !== undefined ? words[key] : key;
  }

  function pad2(n) {
    return (n < 10 ? "0" : "") + n;
  }

  // the same as admin.py's duration()
  function duration(seconds) {
    if (seconds === null || seconds === undefined) {
      return word("none");
    }
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) {
      return s + sep + word("s");
    }
    var m = Math.floor(s / 60);
    if (m < 60) {
      return m + sep + word("min");
    }
    var h = Math.floor(m / 60);
    m = m % 60;
    if (h < 48) {
      return h + sep + word("h") + " " + pad2(m) + sep + word("min");
    }
    return Math.floor(h / 24) + sep + word("d") + " " + (h % 24) + sep + word("h");
  }

  function when(ts) {
    if (!ts) {
      return word("never");
    }
    var d = new Date(ts * 1000);
    var off = -d.getTimezoneOffset();
    var sign = off < 0 ? "-" : "+";
    off = Math.abs(off);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " +
      pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds()) + " " +
      sign + pad2(Math.floor(off / 60)) + pad2(off % 60);
  }

  // Server strings (folder names, reasons) arrive exact; show their control characters and bidi
  // overrides as escapes, as the server-rendered page does (mailsyncd/text.py shown()).
  var hidden = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}\p{Cn}]/gu;
  var short = {"\t": "\\t", "\n": "\\n", "\r": "\\r"};

  function shown(s) {
    return String(s).replace(hidden, function (c) {
      if (short[c]) {
        return short[c];
      }
      var n = c.codePointAt(0);
      var hex = n.toString(16);
      return n < 0x100 ? "\\x" + ("0" + hex).slice(-2) :
        n < 0x10000 ? "\\u" + ("000" + hex).slice(-4) : "\\U" + ("0000000" + hex).slice(-8);
    });
  }

  function format(kind, v) {
    switch (kind) {
      case "num":
        return v === null || v === undefined ? "" : nf.format(v);
      case "pct":
        return (v || 0).toFixed(1) + "%";
      case "rate":
        return v === null || v === undefined ? word("none") : nf.format(Math.round(v * 60)) + word("per_min");
      case "eta":
        return duration(v);
      case "when":
        return when(v);
      case "next":
        return v === "running" ? word("running_now") : v ? when(v) : word("none");
      case "list":
        return v && v.length ? v.map(shown).join(", ") : word("none");
      case "phase":
        return (words.phases || {})[v] || v;
      case "stage":
        return v === null ? word("none") : (words.stages || {})[v] || shown(v);
      case "watch":
        return (words.watch || {})[v] || shown(v);
      case "latency":
        return v === null ? word("none") : v.toFixed(1) + sep + word("s");
      case "reason":
        return v ? shown(v) : word("none");
      default:
        return v === null || v === undefined ? "" : shown(v);
    }
  }

  function field(obj, path) {
    var parts = path.split(".");
    for (var i = 0; i < parts.length; i++) {
      if (obj === null || obj === undefined) {
        return undefined;
      }
      obj = obj[parts[i]];
    }
    return obj;
  }

  function update(el, item) {
    var f = el.getAttribute("data-f");
    var kind = el.getAttribute("data-fmt");
    if (kind === "bar") {
      var total = item.source_messages || 0;
      var done = total ? Math.min(total, item.target_messages + item.skipped) : (item.percent >= 100 ? 1 : 0);
      el.max = Math.max(total, 1);
      el.value = done;
      el.textContent = (item.percent || 0).toFixed(1) + "%";
      return;
    }
    // the next pass of an account whose pass runs now is not "never"
    var v = kind === "next" && item.running ? "running" : field(item, f);
    if (v === undefined) {
      return;
    }
    var text = format(kind, v);
    if (kind === "phase") {
      el.className = "phase phase-" + v;
    }
    if (f.indexOf("phases.") === 0 && el.parentNode && el.parentNode.parentNode) {
      el.parentNode.parentNode.classList.toggle("zero", !v);
    }
    if (el.textContent !== text) {
      el.textContent = text;
      el.classList.remove("changed");
      void el.offsetWidth; // restart the highlight
      el.classList.add("changed");
    }
  }

  function apply(doc) {
    var domains = {};
    var accounts = {};
    (doc.domains || []).forEach(function (d) { domains[d.name] = d; });
    (doc.accounts || []).forEach(function (a) { accounts[a.address] = a; });
    document.querySelectorAll("[data-f]").forEach(function (el) {
      var item = null;
      if (el.hasAttribute("data-d")) {
        item = domains[el.getAttribute("data-d")];
      } else if (el.hasAttribute("data-a")) {
        item = accounts[el.getAttribute("data-a")];
      } else if (el.hasAttribute("data-t")) {
        item = doc.totals;
      }
      if (item) {
        update(el, item);
      }
    });
    charts.forEach(function (c) { c.add(doc); });
  }

  function say(text, bad) {
    if (!liveEl) {
      return;
    }
    liveEl.hidden = false;
    liveEl.textContent = text;
    liveEl.classList.toggle("bad", !!bad);
  }

  function poll() {
    fetch(statusUrl, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {
          say(word("expired"), true);
          clearInterval(timer);
          throw new Error("signed out");
        }
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.json();
      })
      .then(function (doc) {
        apply(doc);
        var t = new Date(doc.generated * 1000);
        say(word("live") + " · " + word("updated").replace("{time}",
          pad2(t.getHours()) + ":" + pad2(t.getMinutes()) + ":" + pad2(t.getSeconds())), false);
      })
      .catch(function (e) {
        if (String(e.message) !== "signed out") {
          say(word("stale"), true);
        }
      });
  }

  // -- charts ---------------------------------------------------------------------------------
  var charts = [];
  var MAX_POINTS = 720;

  function Chart(el, series) {
    this.el = el;
    this.name = el.getAttribute("data-domain");
    var s = (series.domains || {})[this.name] || { target: [], rate: [] };
    this.t = (series.t || []).slice();
    this.target = s.target.slice();
    this.rate = s.rate.slice();
    this.plot = null;
    this.draw();
  }

  // time of day on the x axis (the window is an hour at most): no date row to crowd a small chart
  function clockLabels(u, splits) {
    var span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
    return splits.map(function (ts) {
      var d = new Date(ts * 1000);
      var hm = pad2(d.getHours()) + ":" + pad2(d.getMinutes());
      return span < 600 ? hm + ":" + pad2(d.getSeconds()) : hm;
    });
  }

  Chart.prototype.size = function () {
    return { width: Math.max(200, this.el.clientWidth), height: 150 };
  };

  Chart.prototype.draw = function () {
    var color = getComputedStyle(this.el).color;
    var accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#1f6feb";
    var size = this.size();
    var opts = {
      width: size.width,
      height: size.height,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: function (u, min, max) { return max - min < 60 ? [max - 60, max] : [min, max]; } },
        y: { range: function (u, min, max) { return [0, Math.max(10, (isFinite(max) ? max : 0) * 1.15)]; } }
      },
      axes: [
        { stroke: color, grid: { stroke: "rgba(127,127,127,.15)" }, ticks: { stroke: "rgba(127,127,127,.3)" },
          space: 80, values: clockLabels },
        { stroke: color, size: 48, grid: { stroke: "rgba(127,127,127,.15)" }, ticks: { stroke: "rgba(127,127,127,.3)" } }
      ],
      series: [
        {},
        { label: this.el.getAttribute("data-label") || "", stroke: accent, width: 2,
          fill: "rgba(31,111,235,.12)", spanGaps: true, points: { show: false },
          paths: window.uPlot.paths && window.uPlot.paths.stepped ? window.uPlot.paths.stepped({ align: 1 }) : undefined }
      ]
    };
    while (this.el.firstChild) {
      this.el.removeChild(this.el.firstChild);
    }
    this.plot = new window.uPlot(opts, [this.t, this.rate], this.el);
  };

  Chart.prototype.add = function (doc) {
    var d = null;
    (doc.domains || []).forEach(function (x) { if (x.name === this.name) { d = x; } }, this);
    if (!d) {
      return;
    }
    var t = doc.generated;
    var n = this.t.length;
    if (n && t - this.t[n - 1] < 1) {
      return;
    }
    var rate = null;
    if (n) {
      var dt = t - this.t[n - 1];
      rate = Math.round(Math.max(0, d.target_messages - this.target[n - 1]) * 600 / dt) / 10;
    }
    this.t.push(t);
    this.target.push(d.target_messages);
    this.rate.push(rate);
    if (this.t.length > MAX_POINTS) {
      this.t.shift();
      this.target.shift();
      this.rate.shift();
    }
    this.plot.setData([this.t, this.rate]);
  };

  Chart.prototype.resize = function () {
    if (this.plot) {
      this.plot.setSize(this.size());
    }
  };

  function startCharts() {
    var url = body.getAttribute("data-series");
    var els = document.querySelectorAll(".chart[data-domain]");
    if (!url || !els.length || !window.uPlot) {
      return Promise.resolve();
    }
    return fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : { t: [], domains: {} }; })
      .then(function (series) {
        els.forEach(function (el) {
          try {
            charts.push(new Chart(el, series));
          } catch (e) {
            // keep the server-drawn sparkline
          }
        });
        var pending = null;
        window.addEventListener("resize", function () {
          clearTimeout(pending);
          pending = setTimeout(function () { charts.forEach(function (c) { c.resize(); }); }, 100);
        });
      })
      .catch(function () { /* the sparkline stays */ });
  }

  startCharts().then(function () {
    poll();
    timer = setInterval(poll, every);
  });
})();
