// kfx ui: sizing framed artifacts, the runs table (pick to compare, live rows), the run page's live status.
"use strict";

// A framed artifact (sandboxed: no script; same origin, so its height can be read) fits its content.
function fitFrame(frame) {
  try {
    const doc = frame.contentDocument;
    if (doc && doc.documentElement) frame.style.height = (doc.documentElement.scrollHeight + 24) + "px";
  } catch (e) { /* a frame we cannot read keeps its height */ }
}
function watchFrames(scope) {
  scope.querySelectorAll("iframe.fit").forEach(frame => {
    frame.addEventListener("load", () => fitFrame(frame));
    if (frame.contentDocument && frame.contentDocument.readyState === "complete") fitFrame(frame);
  });
  // A frame in a closed <details> has no layout (height 0) until it opens: fit it then.
  const sections = [...scope.querySelectorAll("details")];
  if (scope.tagName === "DETAILS") sections.push(scope);
  sections.forEach(details => details.addEventListener("toggle", () => {
    if (details.open) details.querySelectorAll("iframe.fit").forEach(fitFrame);
  }));
}

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}

// ---- Runs: tick runs to compare; a new run (started in another shell) appears without a reload.
function runsPage(table) {
  const button = document.getElementById("compare-selected");
  const picked = () => [...document.querySelectorAll("input.pick:checked")].map(box => box.value);
  document.addEventListener("change", event => {
    if (event.target.classList.contains("pick")) button.disabled = picked().length < 2;
  });
  button.addEventListener("click", () => {
    location.href = "/compare?" + picked().map(run => "run=" + encodeURIComponent(run)).join("&");
  });
  const firstPage = !new URLSearchParams(location.search).get("page");
  if (!firstPage) return;
  setInterval(async () => {
    try {
      const now = await getJSON("/api/runs");
      const newestState = table.querySelector("tbody tr .badge");
      if (String(now.total) === table.dataset.total && now.newest === table.dataset.newest &&
          (!newestState || newestState.textContent === now.state)) return;
      const response = await fetch("/runs" + (location.search ? location.search + "&" : "?") + "partial=1", {cache: "no-store"});
      const keep = new Set(picked());
      document.getElementById("run-rows").innerHTML = await response.text();
      document.querySelectorAll("input.pick").forEach(box => { box.checked = keep.has(box.value); });
      table.dataset.total = now.total; table.dataset.newest = now.newest || "";
    } catch (e) { /* the server may be restarting: try again next time */ }
  }, 2000);
}

// ---- A run: clicking a task opens its section; while the run is in progress, states, the timeline
// and the task list update in place.
function runPage(head) {
  document.querySelectorAll("svg.graph a.node").forEach(node => {
    node.addEventListener("click", event => {
      const label = node.dataset.label || (node.getAttribute("href") || "").replace("#task-", "");
      const sections = [...document.querySelectorAll("details.task")].filter(d => d.dataset.label === label);
      if (!sections.length) return;
      event.preventDefault();
      sections.forEach(section => { section.open = true; section.classList.add("flash"); });
      setTimeout(() => sections.forEach(section => section.classList.remove("flash")), 1500);
      sections[0].scrollIntoView({behavior: "instant", block: "start"});
      history.replaceState(null, "", "#task-" + label);
    });
  });
  if (head.dataset.state !== "RUNNING") return;
  const note = document.getElementById("live-note");
  note.textContent = " · live: updating every 2 s";
  const timer = setInterval(async () => {
    let status;
    try { status = await getJSON("/api/runs/" + encodeURIComponent(head.dataset.run) + "/status"); } catch (e) { return; }
    const byLabel = {};
    for (const [name, task] of Object.entries(status.tasks)) (byLabel[task.label] = byLabel[task.label] || []).push(task.state);
    document.querySelectorAll("svg.graph a.node").forEach(node => {
      const states = byLabel[node.dataset.label];
      if (!node.dataset.label || !states) return;
      const state = aggregate(states);
      node.setAttribute("class", node.getAttribute("class").replace(/state-[A-Z_]+/, "state-" + state));
      const text = node.querySelector("text.state");
      if (text) text.textContent = state.toLowerCase() + (states.length > 1 ? " ×" + states.length : "");
    });
    for (const [name, task] of Object.entries(status.tasks)) {
      const badge = document.querySelector(`[data-task-state="${CSS.escape(name)}"]`);
      if (badge) { badge.textContent = task.state; badge.className = "badge state-" + task.state; }
    }
    await refreshTasks(head.dataset.run);
    const badge = document.getElementById("state-badge");
    badge.textContent = status.state; badge.className = "badge state-" + status.state;
    if (status.state !== "RUNNING") {
      clearInterval(timer);
      note.textContent = " · finished";
    }
  }, 2000);
}

// The timeline redrawn, each new task's section added, a closed section replaced (its outputs so
// far); an open one is left as the person has it (its badge is updated above).
async function refreshTasks(run) {
  let text;
  try {
    const response = await fetch("/runs/" + encodeURIComponent(run) + "?partial=live", {cache: "no-store"});
    if (!response.ok) return;
    text = await response.text();
  } catch (e) { return; }
  const fresh = new DOMParser().parseFromString(text, "text/html");
  const timeline = fresh.getElementById("timeline");
  if (timeline) document.getElementById("timeline").innerHTML = timeline.innerHTML;
  const list = document.getElementById("tasks");
  const sections = fresh.querySelectorAll("details.task");
  if (sections.length) list.querySelectorAll(":scope > p.muted").forEach(p => p.remove());
  sections.forEach(section => {
    const shown = document.getElementById(section.id);
    const node = document.importNode(section, true);
    if (!shown) list.appendChild(node);
    else if (!shown.open) shown.replaceWith(node);
    else return;
    watchFrames(node);
  });
}

function aggregate(states) {
  for (const s of ["FAILED", "RUNNING"]) if (states.includes(s)) return s;
  if (states.every(s => s === "SKIPPED")) return "SKIPPED";
  if (states.every(s => s === "CACHED")) return "CACHED";
  const done = s => ["COMPLETE", "CACHED", "IMPORTED", "SKIPPED"].includes(s);
  if (states.every(done)) return "COMPLETE";
  return states.some(done) ? "RUNNING" : "PENDING";
}

// Models: "model card" opens the version's card below the table.
function cardLinks() {
  document.querySelectorAll("a.show-card").forEach(link => link.addEventListener("click", () => {
    const details = document.getElementById(decodeURIComponent(link.hash.slice(1)));
    if (details) details.open = true;
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  watchFrames(document);
  cardLinks();
  const table = document.getElementById("runs");
  if (table) runsPage(table);
  const head = document.getElementById("run-state");
  if (head) runPage(head);
});
