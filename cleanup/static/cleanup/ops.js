// The operations dashboard: charts, and the live feed (one EventSource per page) that
// keeps the page's run, counts and cleanup state current without a reload.
(function () {
  "use strict";
  const body = document.body;
  const page = body.dataset.page;

  // --- charts (uPlot, vendored) ------------------------------------------------------
  // Times in UTC, as everywhere else on these pages.
  const utc = (seconds) => uPlot.tzDate(new Date(seconds * 1e3), "Etc/UTC");
  const counted = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];  // whole numbers
  function chart(element) {
    const data = JSON.parse(document.getElementById(element.dataset.series).textContent);
    const scales = { x: { time: true, range: [data.from, data.to] } };  // the whole window
    const width = Math.max(element.clientWidth, 300);
    const points = element.id === "chart-live" ? data.live_previews.at : data.stops_per_hour.at;
    if (points.length === 0) {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "Nothing recorded in this window yet.";
      element.append(empty);
      return null;
    }
    if (element.id === "chart-live") {
      const series = data.live_previews;
      return new uPlot(
        { width, height: 220, tzDate: utc, scales,
          series: [{ label: "UTC" }, { label: "previews examined", stroke: "#2456a6", fill: "rgba(36,86,166,.12)" }],
          axes: [{}, { label: "previews", incrs: counted }] },
        [series.at, series.previews], element);
    }
    const stops = data.stops_per_hour;
    const bars = uPlot.paths.bars({ size: [0.6, 40] });
    return new uPlot(
      { width, height: 220, tzDate: utc, scales,
        series: [{ label: "UTC" }, { label: "stopped", stroke: "#1f7a3d", fill: "rgba(31,122,61,.35)", paths: bars },
                 { label: "failed", stroke: "#b42318", width: 2, points: { size: 6 } },
                 { label: "skipped", stroke: "#8a94a3", width: 1 }],
        axes: [{}, { label: "per hour", incrs: counted }] },
      [stops.at, stops.stopped, stops.failed, stops.skipped], element);
  }
  function charts() {
    document.querySelectorAll(".chart").forEach((element) => { element.replaceChildren(); chart(element); });
  }
  charts();

  // --- the overview's cards: read again after each sweep (at most every few seconds) ----
  let refreshing = null;
  function refreshSoon(delay = 3000) {
    if (page !== "overview" || refreshing) return;
    refreshing = setTimeout(async () => {
      try {
        const response = await fetch(window.location.pathname, { credentials: "same-origin" });
        if (!response.ok) return;
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        document.querySelectorAll("[data-refresh]").forEach((element) => {
          const replacement = fresh.getElementById(element.id);
          if (replacement) element.replaceWith(replacement);
        });
        pauseForms();
        charts();
      } finally {
        refreshing = null;
      }
    }, delay);
  }
  function pauseForms() {
    const state = document.getElementById("cleanup-state");
    if (!state) return;
    const paused = state.dataset.paused === "true";
    document.getElementById("pause-form").hidden = paused;
    document.getElementById("resume-form").hidden = !paused;
    // A pause with an end: show it ended when it does, without waiting for a sweep.
    const until = paused && state.dataset.until ? Date.parse(state.dataset.until) : NaN;
    if (!Number.isNaN(until)) setTimeout(() => refreshSoon(0), Math.max(0, until - Date.now()) + 1000);
  }
  pauseForms();

  // --- the live feed -------------------------------------------------------------------
  const feed = document.getElementById("feed");
  function feedState(state, words) { if (feed) { feed.dataset.state = state; feed.textContent = words; } }
  if (!body.dataset.events || body.dataset.since === undefined) { feedState("off", "not live"); return; }

  let runId = body.dataset.run ? Number(body.dataset.run) : null;
  const rows = document.getElementById("decisions");
  const rowTemplate = document.getElementById("decision-row");
  const counts = document.getElementById("run-counts");

  function setText(id, text) { const e = document.getElementById(id); if (e) e.textContent = text; }
  function seconds(date) { return date.toISOString().slice(0, 19).replace("T", " "); }

  function setCounts(summary) {
    if (!counts) return;
    for (const name of ["examined", "found", "stopped", "skipped", "deferred", "failed", "cancelled", "pending"]) {
      if (summary[name] !== undefined) counts.querySelector(`[data-count="${name}"]`).textContent = summary[name];
    }
  }
  function bump(name, by) {
    const cell = counts && counts.querySelector(`[data-count="${name}"]`);
    if (cell) cell.textContent = Number(cell.textContent) + by;
  }
  function fillRow(row, decision) {
    row.dataset.decision = decision.decision;
    row.querySelector(".session").textContent = decision.session;
    row.querySelector(".reason").textContent = decision.reason;
    row.querySelector(".level").textContent = decision.level;
    setOutcome(row, decision);
  }
  function setOutcome(row, decision) {
    const outcome = row.querySelector(".outcome");
    outcome.textContent = outcome.dataset.outcome = decision.outcome;
    row.querySelector(".detail").textContent = decision.detail || "";
    row.classList.remove("fresh"); void row.offsetWidth; row.classList.add("fresh");
  }
  function showDecisions(decisions) {
    if (!rows) return;
    rows.replaceChildren(...decisions.map((decision) => {
      const row = rowTemplate.content.firstElementChild.cloneNode(true);
      fillRow(row, decision);
      return row;
    }));
  }
  function runState(words) { setText("run-state", words); }

  function onRunEvent(event) {
    const found = (event.decisions || []).length + (event.deferred || 0);
    if (page === "overview") {
      if (event.phase === "started") setText("last-sweep", `Sweeping now: run ${event.run} (${event.trigger})…`);
      if (event.phase === "swept" || event.phase === "finished") refreshSoon();
      if (event.phase === "swept" && found > 0 && event.run !== runId) {
        runId = event.run;  // a run that found something becomes the live run
        document.getElementById("live-run").hidden = false;
        document.getElementById("no-run").hidden = true;
        document.getElementById("run-state").hidden = false;
        const title = document.getElementById("run-title");
        title.replaceChildren();
        const link = document.createElement("a");
        link.href = `runs/${event.run}/`;
        link.textContent = `run ${event.run}`;
        title.append(link, ` (${event.trigger}${event.dry_run ? ", dry run" : ""}), swept ${seconds(new Date(event.at))} UTC`);
      }
    } else if (page === "runs") {
      if (event.phase === "swept" && found > 0) document.getElementById("new-runs").hidden = false;
      return;
    }
    if (event.run !== runId) return;
    if (event.phase === "started") runState("sweeping");
    if (event.phase === "swept") {
      setText("run-swept", `${seconds(new Date(event.at))} UTC (${event.duration_ms} ms)`);
      showDecisions(event.decisions || []);
      setCounts(event);
      runState(event.finished ? "finished" : "stopping");
    }
    if (event.phase === "stopping" && rows) {
      const row = rows.querySelector(`tr[data-decision="${event.decision}"]`);
      const outcome = row && row.querySelector(".outcome");
      if (outcome && outcome.dataset.outcome === "pending") {  // not already shown settled
        setOutcome(row, event);
        bump("pending", -1);
        bump(event.outcome === "dry_run" ? "skipped" : event.outcome, 1);
      }
    }
    if (event.phase === "finished") {
      if (event.examined !== undefined) setCounts(event);
      runState("finished");
      setText("run-finished", `${seconds(new Date(event.at))} UTC`);
      const cancel = document.getElementById("cancel-card");
      if (cancel) cancel.hidden = true;
      const failed = counts && Number(counts.querySelector('[data-count="failed"]').textContent);
      const retry = document.getElementById("retry-card");
      if (retry && failed) retry.hidden = false;
    }
  }

  const since = body.dataset.since;
  const source = new EventSource(body.dataset.events + (since ? "?since=" + encodeURIComponent(since) : ""));
  source.onopen = () => feedState("live", "live");
  source.onerror = () => {
    // Closed for good: refused (too many streams, logged out); otherwise it reconnects
    // by itself and resumes after the last event it saw.
    if (source.readyState === EventSource.CLOSED) feedState("off", "live updates off: reload to retry");
    else feedState("connecting", "reconnecting…");
  };
  source.addEventListener("reset", () => window.location.reload());
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.phase === "paused" || event.phase === "resumed") refreshSoon(0);
    else onRunEvent(event);
  };
  window.addEventListener("pagehide", () => source.close());
})();
