/* Sluiceway dashboard: forms and buttons (actions through the JSON API, with the CSRF token),
   the error flash, and relative times. Vanilla, no build step; nothing inline (the CSP
   allows scripts from 'self' only), so every handler is bound here. */
"use strict";

(function () {
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") || "" : "";
  }

  function flash(message, ok) {
    var box = document.getElementById("flash");
    if (!box) { return; }
    box.textContent = message;
    box.classList.toggle("ok", !!ok);
    box.hidden = false;
    box.scrollIntoView({ block: "nearest" });
  }

  function clearFlash() {
    var box = document.getElementById("flash");
    if (box) { box.hidden = true; box.textContent = ""; }
  }

  /* POST a JSON body; resolves to the answer's JSON, rejects with the error body's
     message (the API's one error shape: {"error": {"code", "message", "field"?}}). */
  function postJson(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-CSRF-Token": csrfToken()
      },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!response.ok) {
          var error = data && data.error ? data.error : null;
          var message = error ? error.message : ("HTTP " + response.status + " from " + url);
          if (error && error.field) { message += " (" + error.field + ")"; }
          throw new Error(message);
        }
        return data;
      });
    }, function () {
      throw new Error("the service did not answer (" + url + "): is it running?");
    });
  }

  function reloadSoon() {
    window.setTimeout(function () { window.location.reload(); }, 400);
  }

  function onActionClick(event) {
    var button = event.target.closest("button[data-action]");
    if (!button) { return; }
    event.preventDefault();
    var question = button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { return; }
    clearFlash();
    button.disabled = true;
    postJson(button.getAttribute("data-action"), {}).then(function (data) {
      var next = data && (data.run_id || (data.run && data.run.id) || (data.id && data.flow ? data.id : null));
      if (button.id === "retry" && next) {
        window.location.assign("/runs/" + encodeURIComponent(next));
        return;
      }
      flash((button.textContent || "Done").trim() + ": done", true);
      reloadSoon();
    }).catch(function (error) {
      button.disabled = false;
      flash(error.message);
    });
  }

  /* A param's value from its input, by data-type; throws naming the param. */
  function paramValue(input) {
    var name = input.name.slice("param.".length);
    var type = input.getAttribute("data-type") || "str";
    var text = input.value;
    if (type === "bool") { return input.checked; }
    if (type === "int") {
      if (!/^\s*-?\d+\s*$/.test(text)) { throw new Error("param " + name + ": expected a whole number"); }
      return parseInt(text, 10);
    }
    if (type === "float") {
      var number = Number(text);
      if (text.trim() === "" || !isFinite(number)) { throw new Error("param " + name + ": expected a number"); }
      return number;
    }
    if (type === "json") {
      try { return JSON.parse(text); } catch (e) {
        throw new Error("param " + name + ": not valid JSON (" + e.message + ")");
      }
    }
    return text;
  }

  function onTriggerSubmit(event) {
    var form = event.target;
    if (form.id !== "trigger-form") { return; }
    event.preventDefault();
    clearFlash();
    var params = {};
    try {
      form.querySelectorAll('input[name^="param."]').forEach(function (input) {
        params[input.name.slice("param.".length)] = paramValue(input);
      });
    } catch (error) {
      flash(error.message);
      return;
    }
    var flow = form.getAttribute("data-flow");
    var button = form.querySelector('button[type="submit"]');
    if (button) { button.disabled = true; }
    postJson("/api/flows/" + encodeURIComponent(flow) + "/runs", { params: params }).then(function (run) {
      window.location.assign("/runs/" + encodeURIComponent(run.id));
    }).catch(function (error) {
      if (button) { button.disabled = false; }
      flash(error.message);
    });
  }

  /* "3 min ago" / "in 5 min" beside absolute times; the absolute one stays in the title. */
  function relative(seconds) {
    var future = seconds < 0;
    var s = Math.abs(seconds);
    var text;
    if (s < 45) { text = Math.round(s) + " s"; }
    else if (s < 3600) { text = Math.round(s / 60) + " min"; }
    else if (s < 86400 * 2) { text = Math.round(s / 3600) + " h"; }
    else { text = Math.round(s / 86400) + " d"; }
    return future ? "in " + text : text + " ago";
  }

  function updateTimes() {
    var now = Date.now();
    document.querySelectorAll("time.ago[datetime]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) { return; }
      var text = relative((now - at) / 1000);
      if (el.textContent !== text) { el.textContent = text; }
    });
  }

  document.addEventListener("click", onActionClick);
  document.addEventListener("submit", onTriggerSubmit);
  document.addEventListener("DOMContentLoaded", updateTimes);
  window.setInterval(updateTimes, 20000);
  /* sections live.js swaps in carry absolute times: make them relative again */
  new MutationObserver(function (records) {
    for (var i = 0; i < records.length; i++) {
      var added = records[i].addedNodes;
      for (var j = 0; j < added.length; j++) {
        var node = added[j];  /* text nodes are our own updates: only elements count */
        if (node.nodeType === 1 && (node.matches("time.ago") || node.querySelector("time.ago"))) {
          updateTimes();
          return;
        }
      }
    }
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
