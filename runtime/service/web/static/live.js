/* Sluiceway dashboard: live updates over server-sent events (/api/stream).
 *
 * The page says what it shows: <body data-live="home|flow|runs|run|logs"> (data-flow on a
 * flow's page, data-run on a run's). Elements that show a state carry class st-<state>,
 * data-run (and data-task for a task); [data-state-text] shows it as text too. Events
 * update those in place; an event about something the page does not show yet (a new run,
 * a new attempt) re-fetches the page, at most once a second, and swaps every
 * [data-refresh] element by id. A run page tails its log lines into #log-tail.
 * No data from an event ever becomes HTML: text goes in with textContent.
 */
"use strict";

(function () {
  var ENDED = { succeeded: true, failed: true, cancelled: true };
  var REFRESH_MS = 1000; // at most one page re-fetch a second
  var AGAIN_MS = 10000; // a stream the server refused (401, 503): try again this late
  var page = document.body.dataset.live;
  if (!page || !window.EventSource || page === "logs") {
    return; // not a live page (login, log search): nothing to follow
  }
  var pageRun = document.body.dataset.run || null;
  var pageFlow = document.body.dataset.flow || null;
  var source = null;
  var lastRefresh = 0;
  var refreshTimer = null;
  var refreshing = false;
  var broken = false; // the stream dropped: what it missed is re-fetched when it is back

  function query() {
    if (page === "run" && pageRun) {
      return "?run=" + encodeURIComponent(pageRun) + "&after=" + lastLogId();
    }
    if (page === "flow" && pageFlow) {
      return "?flow=" + encodeURIComponent(pageFlow);
    }
    return "";
  }

  function connect() {
    if (source) {
      source.close();
    }
    source = new EventSource("/api/stream" + query());
    source.addEventListener("open", function () {
      if (broken) {
        broken = false;
        scheduleRefresh();
      }
    });
    source.addEventListener("error", function () {
      broken = true;
      if (source.readyState === EventSource.CLOSED) {
        // refused (not a network blip, which EventSource retries itself): later, anew
        window.setTimeout(connect, AGAIN_MS);
      }
    });
    source.addEventListener("run", function (e) { onRun(parse(e)); });
    source.addEventListener("task", function (e) { onTask(parse(e)); });
    source.addEventListener("log", function (e) { onLog(parse(e)); });
    source.addEventListener("resync", function () {
      // we fell behind: take the page as the server has it now, then follow on from there
      source.close();
      source = null;
      refresh().then(connect, connect);
    });
  }

  function parse(e) {
    try {
      return JSON.parse(e.data);
    } catch (err) {
      return null;
    }
  }

  // --- states ---

  function setState(el, state) {
    var keep = [];
    el.classList.forEach(function (name) {
      if (name.indexOf("st-") !== 0) {
        keep.push(name);
      }
    });
    keep.push("st-" + state);
    el.setAttribute("class", keep.join(" "));
    if (el.hasAttribute("data-state-text")) {
      el.textContent = state;
    }
  }

  function byRun(runId) {
    // the body's own data-run names the page's run: it shows no state
    var found = document.body.querySelectorAll('[data-run="' + cssNumber(runId) + '"]');
    return Array.prototype.slice.call(found);
  }

  function cssNumber(value) {
    return String(parseInt(value, 10) || 0);
  }

  function onRun(ev) {
    if (!ev || !ev.state) {
      return;
    }
    var found = byRun(ev.run_id);
    var shown = 0;
    found.forEach(function (el) {
      if (!el.hasAttribute("data-task")) {
        setState(el, ev.state);
        shown += 1;
      }
    });
    if (!shown && page !== "run") {
      scheduleRefresh(); // a run the page does not show yet
    }
    if (page === "run" && String(ev.run_id) === pageRun && ENDED[ev.state]) {
      scheduleRefresh(); // its end: durations, the Gantt, the buttons
    }
  }

  function onTask(ev) {
    if (!ev || !ev.state || typeof ev.task !== "string") {
      return;
    }
    var found = byRun(ev.run_id);
    var matched = 0;
    found.forEach(function (el) {
      if (el.getAttribute("data-task") === ev.task) {
        setState(el, ev.state);
        matched += 1;
      }
    });
    if (page === "run" && String(ev.run_id) === pageRun) {
      matched += updateBar(ev);
      if (!matched || !hasBar(ev)) {
        scheduleRefresh(); // a new instance or a new attempt: the page draws it
      }
    } else if (!found.length) {
      scheduleRefresh(); // a run the page does not show yet
    }
  }

  function bars(ev) {
    var gantt = document.getElementById("gantt");
    if (!gantt) {
      return [];
    }
    return Array.prototype.filter.call(gantt.querySelectorAll("[data-task]"), function (el) {
      return el.getAttribute("data-task") === ev.task &&
        el.getAttribute("data-attempt") === String(ev.attempt);
    });
  }

  function hasBar(ev) {
    return ev.state === "pending" || ev.state === "skipped" ||
      ev.state === "upstream_failed" || bars(ev).length > 0;
  }

  function updateBar(ev) {
    var found = bars(ev);
    found.forEach(function (el) { setState(el, ev.state); });
    return found.length;
  }

  // --- log lines ---

  function tail() {
    return document.getElementById("log-tail");
  }

  function lastLogId() {
    var box = tail();
    var last = 0;
    if (box) {
      box.querySelectorAll(".log-line[data-id]").forEach(function (el) {
        var id = parseInt(el.getAttribute("data-id"), 10);
        if (id > last) {
          last = id;
        }
      });
    }
    return last;
  }

  function span(cls, text) {
    var el = document.createElement("span");
    el.className = cls;
    el.textContent = text == null ? "" : String(text);
    return el;
  }

  function clock(iso) {
    // "2026-01-02T03:04:05.678901Z" -> "03:04:05.678" (UTC, as stored; the full stamp is the
    // element's title)
    var m = /T(\d\d:\d\d:\d\d)(\.\d{1,3})?/.exec(String(iso || ""));
    return m ? m[1] + (m[2] || "") : String(iso || "");
  }

  function onLog(ev) {
    var box = tail();
    if (!ev || !box || typeof ev.id !== "number" || ev.id <= lastLogId()) {
      return; // not this page's, or shown already (a reconnect, a refreshed page)
    }
    var atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    var line = document.createElement("div");
    var level = String(ev.level || "info").toLowerCase().replace(/[^a-z]/g, "");
    line.className = "log-line lvl-" + level;
    line.setAttribute("data-id", String(ev.id));
    var ts = span("ts", clock(ev.ts));
    ts.title = String(ev.ts || "");
    line.appendChild(ts);
    line.appendChild(document.createTextNode(" ")); // spaced like the server-rendered lines
    line.appendChild(span("task", ev.task));
    line.appendChild(document.createTextNode(" "));
    line.appendChild(span("msg", ev.message));
    box.appendChild(line);
    if (atBottom) {
      box.scrollTop = box.scrollHeight;
    }
  }

  // --- re-fetching the page ---

  function scheduleRefresh() {
    if (refreshTimer !== null) {
      return; // one is coming
    }
    var wait = Math.max(0, lastRefresh + REFRESH_MS - Date.now());
    refreshTimer = window.setTimeout(function () {
      refreshTimer = null;
      refresh();
    }, wait);
  }

  function refresh() {
    if (refreshing) {
      scheduleRefresh();
      return Promise.resolve();
    }
    refreshing = true;
    lastRefresh = Date.now();
    return fetch(window.location.href, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
      cache: "no-store",
    }).then(function (response) {
      if (!response.ok || response.redirected) {
        return; // logged out or failing: the next navigation shows why
      }
      return response.text().then(swap);
    }).catch(function () {
      // offline for a moment: the next event tries again
    }).then(function () {
      refreshing = false;
    });
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    document.querySelectorAll("[data-refresh][id]").forEach(function (old) {
      var found = fresh.getElementById(old.id);
      if (found && found.hasAttribute("data-refresh")) {
        old.replaceWith(document.importNode(found, true));
      }
    });
    document.dispatchEvent(new CustomEvent("sluiceway:refreshed"));
  }

  connect();
})();
