// A meet: every dive of an event with its score, each diver's total and rank, live while dives are scored.
import { api, apiJson, askForKey, el, fixed, markCurrentPage, setupKey, showMessage } from "/static/api.js";

const LIVE_POLL_MS = 1000;   // while dives of the event are queued or running
const IDLE_POLL_MS = 5000;   // afterwards: new uploads to the event still appear
const $ = (id) => document.getElementById(id);

let shown = null;          // {competition, event} on screen
let pollToken = 0;
let lastResults = null;
const sorting = { standings: { key: null, direction: 1 }, dives: { key: null, direction: 1 } };

markCurrentPage();
setupKey(start);
$("event-form").addEventListener("submit", (event) => {
  event.preventDefault();
  show($("competition").value.trim() || null, $("event").value.trim() || null);
});
$("known-events").addEventListener("change", () => {
  const value = $("known-events").value;
  if (!value) return;
  const [competition, event] = JSON.parse(value);
  $("competition").value = competition || "";
  $("event").value = event || "";
  show(competition, event);
});
$("archive-form").addEventListener("submit", (event) => { event.preventDefault(); startArchiveBatch(); });
$("download-csv").addEventListener("click", downloadCsv);
for (const table of document.querySelectorAll("table.sortable-table")) {
  for (const header of table.querySelectorAll("th.sortable")) {
    header.addEventListener("click", () => sortBy(table.id, header.dataset.key));
  }
}

async function start() {
  await loadEvents();
  const params = new URLSearchParams(window.location.search);
  const competition = params.get("competition"), event = params.get("event");
  if (competition || event) {
    $("competition").value = competition || "";
    $("event").value = event || "";
    show(competition, event);
  }
}

async function loadEvents() {
  try {
    const events = await apiJson("/v1/events");
    $("known-events").replaceChildren(el("option", { value: "" }, events.length ? "– choose –" : "none yet"),
      ...events.map((e) => el("option", { value: JSON.stringify([e.competition, e.event]) },
        `${[e.competition, e.event].filter(Boolean).join(" – ")} (${e.dives} dive${e.dives === 1 ? "" : "s"})`)));
  } catch (problem) {
    report(problem);
  }
}

function show(competition, event) {
  if (!competition && !event) {
    showMessage($("meet-message"), "Name the event: its competition, its event, or both, as given with the uploads.");
    return;
  }
  showMessage($("meet-message"), "");
  shown = { competition, event };
  const params = new URLSearchParams();
  if (competition) params.set("competition", competition);
  if (event) params.set("event", event);
  history.replaceState(null, "", `/meet?${params}`);
  lastResults = null;
  poll(++pollToken);
}

function resultsPath(format) {
  const params = new URLSearchParams();
  if (shown.competition) params.set("competition", shown.competition);
  if (shown.event) params.set("event", shown.event);
  if (format) params.set("format", format);
  return `/v1/events/results?${params}`;
}

async function poll(token) {
  while (token === pollToken) {
    let results = null;
    try {
      results = await apiJson(resultsPath());
    } catch (problem) {
      if (token !== pollToken) return;
      report(problem);
    }
    if (token !== pollToken) return;
    if (results) {
      lastResults = results;
      render(results);
    }
    await new Promise((resolve) => setTimeout(resolve, results && results.finished ? IDLE_POLL_MS : LIVE_POLL_MS));
  }
}

function render(results) {
  $("results-card").hidden = false;
  $("event-title").textContent = [results.competition, results.event].filter(Boolean).join(" – ");
  const counts = results.counts;
  const waiting = counts.queued + counts.running;
  $("event-progress").value = results.progress;
  const parts = [`${counts.done} of ${results.total} dive${results.total === 1 ? "" : "s"} scored`];
  if (counts.failed) parts.push(`${counts.failed} failed`);
  if (waiting) parts.push(`${waiting} waiting`);
  $("event-progress-text").textContent = parts.join(", ");
  $("results-card").dataset.finished = String(results.finished);

  const standings = sorted(results.standings, sorting.standings);
  $("standings").tBodies[0].replaceChildren(...standings.map((s) => el("tr", { dataset: { diver: s.diver } },
    el("td", { class: "num rank" }, s.rank === null ? "–" : String(s.rank)), el("td", {}, s.diver),
    el("td", { class: "num total" }, fixed(s.total)), el("td", { class: "num" }, String(s.dives_counted)),
    el("td", { class: "num" }, String(s.dives_pending)), el("td", { class: "num" }, String(s.dives_failed)))));

  const dives = sorted(results.dives, sorting.dives);
  $("dives").tBodies[0].replaceChildren(...dives.map((d) => {
    const superseded = d.status === "done" && !d.counted;
    const status = d.status === "failed" && d.error ? `failed: ${d.error.message}` : superseded ? "done (superseded by a later score)" : d.status;
    return el("tr", { class: superseded ? "superseded" : "", dataset: { job: d.job_id } },
      el("td", { class: "num" }, d.round === null ? "–" : String(d.round)), el("td", {}, d.diver || "–"),
      el("td", {}, d.action_class || "–"),
      el("td", { class: "num" }, d.difficulty === null ? "–" : fixed(d.difficulty, 1) + (d.difficulty_source === "estimated" ? " (est.)" : "")),
      el("td", { class: "num score" }, d.score === null ? "–" : fixed(d.score)),
      el("td", { class: "num" }, d.interval_low === null ? "–" : `${fixed(d.interval_low)} – ${fixed(d.interval_high)}`),
      el("td", { class: `status-${d.status}` }, status), el("td", { class: "note" }, d.source_name));
  }));
  for (const [tableId, state] of Object.entries(sorting)) {
    for (const header of $(tableId).querySelectorAll("th.sortable")) {
      const active = header.dataset.key === state.key;
      if (active) header.setAttribute("aria-sort", state.direction > 0 ? "ascending" : "descending");
      else header.removeAttribute("aria-sort");
    }
  }
}

function sortBy(tableId, key) {
  const state = sorting[tableId];
  state.direction = state.key === key ? -state.direction : 1;
  state.key = key;
  if (lastResults) render(lastResults);
}

/** Rows in the table's chosen order (the server's order until a header is clicked); empty values last. */
function sorted(rows, { key, direction }) {
  if (!key) return rows;
  return [...rows].sort((a, b) => {
    const x = a[key], y = b[key];
    if (x === null || x === undefined) return y === null || y === undefined ? 0 : 1;
    if (y === null || y === undefined) return -1;
    const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
    return order * direction;
  });
}

async function downloadCsv() {
  if (!shown) return;
  try {
    const response = await api(resultsPath("csv"));
    const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: match ? match[1] : "event.csv" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (problem) {
    report(problem);
  }
}

async function startArchiveBatch() {
  const competition = $("competition").value.trim() || null, event = $("event").value.trim() || null;
  const folder = $("archive-folder").value.trim();
  if (!competition && !event) {
    showMessage($("meet-message"), "Name the event first (competition, event or both): the archive's dives are filed under it.");
    return;
  }
  if (!folder) {
    showMessage($("meet-message"), "Give the folder on the server that holds the event's videos.");
    return;
  }
  const archive = { folder, recursive: $("archive-recursive").checked, competition, event };
  const labels = $("archive-labels").value.trim();
  if (labels) archive.labels_csv = labels;
  $("archive-start").disabled = true;
  try {
    const batch = await apiJson("/v1/batches", { method: "POST", json: { archive } });
    await loadEvents();
    show(competition, event);
    showMessage($("meet-message"), `Scoring ${batch.total} video${batch.total === 1 ? "" : "s"} from ${batch.source}.`, "info");
  } catch (problem) {
    report(problem);
  } finally {
    $("archive-start").disabled = false;
  }
}

function report(problem) {
  showMessage($("meet-message"), problem.message || String(problem));
  if (problem.status === 401) askForKey(problem.message);
}
