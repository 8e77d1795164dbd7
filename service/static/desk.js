// The judges' desk: upload a dive (drag and drop), follow its job, then show the score and its evidence.
import { apiJson, askForKey, authHeaders, el, fixed, markCurrentPage, problemFrom, setupKey, showMessage } from "/static/api.js";
import { alignmentChart, intervalBand, voteChart } from "/static/charts.js";

const POLL_MS = 500;
const SLOW_AFTER_SECONDS = 10;
const STEPS = ["uploaded", "queued", "running", "done"];
const $ = (id) => document.getElementById(id);

let chosenFile = null;
let labelKind = null;   // "execution" or "final", from GET /v1/models
let followToken = 0;    // a newer upload stops following the older job
let videoUrl = null;

markCurrentPage();
setupKey(loadModelInfo);
wireDropZone();
$("dive-form").addEventListener("submit", (event) => { event.preventDefault(); submit(); });

async function loadModelInfo() {
  try {
    const models = await apiJson("/v1/models");
    if (models.length) labelKind = models[0].label_kind;
  } catch { /* the upload itself will say what is wrong */ }
}

function wireDropZone() {
  const zone = $("drop-zone"), input = $("video-file");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  input.addEventListener("click", (event) => event.stopPropagation());
  input.addEventListener("change", () => { if (input.files.length) chooseFile(input.files[0]); });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer.files.length) chooseFile(event.dataTransfer.files[0]);
  });
}

function chooseFile(file) {
  chosenFile = file;
  $("file-name").textContent = `${file.name} (${megabytes(file.size)})`;
  showMessage($("form-message"), "");
}

function megabytes(bytes) {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1e3))} kB`;
}

/** The form's fields, checked as the API checks them; null (with a message shown) when one is wrong. */
function formFields() {
  const problems = [];
  if (!chosenFile) problems.push("Choose a dive video first: drop it on the box above, or click the box to pick a file.");
  const fields = {};
  const difficulty = $("difficulty").value.trim();
  if (difficulty) {
    const value = Number(difficulty);
    if (!Number.isFinite(value) || value <= 0 || value > 5) {
      problems.push("The difficulty must be a number above 0 and at most 5 (for example 3.2).");
    } else fields.difficulty = String(value);
  }
  const code = $("action-class").value.trim();
  if (code) {
    if (!/^[0-9A-Za-z]{1,16}$/.test(code)) problems.push("The dive code is letters and digits only, such as 107B.");
    else fields.action_class = code.toUpperCase();
  }
  const round = $("round").value.trim();
  if (round) {
    const value = Number(round);
    if (!Number.isInteger(value) || value < 1 || value > 99) problems.push("The round is a whole number from 1 to 99.");
    else fields.round = String(value);
  }
  for (const name of ["competition", "event", "diver"]) {
    const value = $(name).value.trim();
    if (value) fields[name] = value;
  }
  if (problems.length) {
    showMessage($("form-message"), problems.join(" "));
    return null;
  }
  return fields;
}

function submit() {
  const fields = formFields();
  if (!fields) return;
  const file = chosenFile;
  const body = new FormData();
  for (const [name, value] of Object.entries(fields)) body.append(name, value);
  body.append("video", file, file.name);

  const request = new XMLHttpRequest();
  request.open("POST", "/v1/scores");
  for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
  $("submit").disabled = true;
  $("upload-progress").hidden = false;
  $("upload-bar").value = 0;
  $("upload-text").textContent = `Uploading ${megabytes(file.size)}…`;
  showMessage($("form-message"), "");
  request.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable) return;
    const percent = Math.round((100 * event.loaded) / event.total);
    $("upload-bar").value = percent;
    $("upload-text").textContent = `Uploading: ${percent}% of ${megabytes(event.total)}`;
  });
  request.upload.addEventListener("load", () => {
    $("upload-bar").value = 100;
    $("upload-text").textContent = "Uploaded: the server is checking the video…";
  });
  request.addEventListener("load", () => {
    $("submit").disabled = false;
    if (request.status === 200 || request.status === 202) {
      const answer = JSON.parse(request.responseText);
      $("upload-text").textContent = "Uploaded and accepted.";
      follow(answer.job_id || answer.id, file);
      return;
    }
    $("upload-progress").hidden = true;
    const problem = problemFrom(request.status, request.responseText);
    showMessage($("form-message"), problem.message);
    if (problem.status === 401) askForKey(problem.message);
  });
  request.addEventListener("error", () => {
    $("submit").disabled = false;
    $("upload-progress").hidden = true;
    showMessage($("form-message"), problemFrom(0, "").message);
  });
  request.send(body);
}

// ---- following the job -------------------------------------------------------------------------

async function follow(jobId, file) {
  const token = ++followToken;
  const started = performance.now();
  $("job-card").hidden = false;
  $("result-card").hidden = true;
  $("job-name").textContent = file.name;
  $("job-card").dataset.jobId = jobId;
  delete $("job-message").dataset.slow;
  showMessage($("job-message"), "", "info");
  setStep("uploaded");
  while (token === followToken) {
    let job;
    try {
      job = await apiJson(`/v1/jobs/${jobId}`);
    } catch (problem) {
      if (token !== followToken) return;
      if (problem.status === 401) { askForKey(problem.message); }
      if (problem.status === 404) { showMessage($("job-message"), problem.message, "error"); return; }
      showMessage($("job-message"), `${problem.message} Still trying…`, "error");
      await sleep(2000);
      continue;
    }
    if (token !== followToken) return;
    const seconds = Math.round((performance.now() - started) / 1000);
    if (job.status === "done") {
      setStep("done");
      $("job-status").textContent = `Scored in ${seconds} s.`;
      showMessage($("job-message"), "", "info");
      renderResult(job, file);
      return;
    }
    if (job.status === "failed") {
      setStep("failed");
      $("job-status").textContent = "";
      showMessage($("job-message"), `This video could not be scored. ${job.error ? job.error.message : ""}`, "error");
      return;
    }
    setStep(job.status);
    $("job-status").textContent = job.status === "queued" ? `Waiting in the queue for ${seconds} s.` : `Scoring for ${seconds} s.`;
    if (seconds >= SLOW_AFTER_SECONDS) {
      const text = job.status === "queued"
        ? `Still waiting after ${seconds} s: the server is scoring other dives first.`
        : `Still scoring after ${seconds} s: this takes longer than usual (a long video, or a busy server).`;
      showMessage($("job-message"), `${text} Keep this page open: the result will appear here.`, "info");
      $("job-message").dataset.slow = "true";
    }
    await sleep(POLL_MS);
  }
}

function setStep(status) {
  const failed = status === "failed";
  const reached = failed ? 2 : STEPS.indexOf(status);
  for (const item of $("job-steps").children) {
    const index = STEPS.indexOf(item.dataset.step);
    item.classList.toggle("reached", index <= reached);
    item.classList.toggle("failed", failed && index === 3);
    if (index === 3) item.textContent = failed ? "Failed" : "Done";
  }
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

// ---- the result --------------------------------------------------------------------------------

function renderResult(job, file) {
  const result = job.result;
  $("result-card").hidden = false;
  $("result-card").dataset.jobId = job.id;
  renderFamiliarity(result.familiarity);
  $("score").textContent = fixed(result.score);
  const interval = result.interval;
  const how = interval.method === "conformal"
    ? "calibrated on dives the model never saw"
    : "the 5th to 95th percentile of the exemplars' votes";
  $("interval-text").replaceChildren(
    el("strong", {}, `${Math.round(interval.level * 100)}% interval: `),
    el("span", { id: "interval-values" }, `${fixed(interval.low)} – ${fixed(interval.high)}`),
    el("span", { class: "note" }, ` (${how})`),
  );
  $("interval-band").replaceChildren(intervalBand({ score: result.score, low: interval.low, high: interval.high }));
  renderFacts(job, result);
  renderVideo(result, file);
  renderAlignment(result.evidence && result.evidence.alignment);
  renderVotes(result);
  $("result-card").scrollIntoView({ behavior: "smooth", block: "start" });
}

function renderFamiliarity(familiarity) {
  const box = $("familiarity-warning");
  if (!familiarity || familiarity.in_distribution !== false) { box.hidden = true; return; }
  const reasons = Array.isArray(familiarity.reasons) ? familiarity.reasons : [];
  box.replaceChildren(
    el("strong", {}, "This video is unlike the dives the model learned from: read the score with care. "),
    el("span", { id: "familiarity-message" }, familiarity.message || "The score may be far from what judges would give."),
    reasons.length ? el("ul", {}, reasons.map((reason) => el("li", {}, reason))) : null,
  );
  box.hidden = false;
}

function renderFacts(job, result) {
  const facts = [];
  const difficultyText = {
    given: "given with the upload",
    estimated: "estimated from similar dives: give it when you know it",
    not_used: "not used by this model",
  }[result.difficulty_source];
  facts.push(["Difficulty", result.difficulty !== null ? `${fixed(result.difficulty, 1)} (${difficultyText})` : difficultyText]);
  if (result.execution_score !== null && result.execution_score !== undefined) {
    facts.push(["Execution", `${fixed(result.execution_score)} (final score ÷ difficulty)`]);
  }
  if (result.action_class) facts.push(["Dive code", result.action_class]);
  facts.push(["Vote spread", `± ${fixed(result.vote_spread)} points (standard deviation of the votes)`]);
  for (const [name, value] of [["Competition", job.competition], ["Event", job.event], ["Diver", job.diver], ["Round", job.round]]) {
    if (value !== null && value !== undefined) facts.push([name, String(value)]);
  }
  const video = result.video;
  if (video && video.seconds_read) {
    facts.push(["Read", `${fixed(video.seconds_read[0])} s to ${fixed(video.seconds_read[1])} s of ${fixed(video.duration_seconds)} s (${video.width}×${video.height}, ${fixed(video.fps, 0)} fps)`]);
  }
  facts.push(["Model", `${result.model.id} ${result.model.version} (${result.model.head} head)`]);
  const t = result.timings || {};
  if (t.total !== undefined) {
    facts.push(["Time", `${fixed(t.total)} s (decode ${fixed(t.decode)} s, features ${fixed(t.features)} s, voting ${fixed(t.voting)} s)`]);
  }
  $("facts").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
}

function renderVideo(result, file) {
  const video = $("video");
  if (videoUrl) URL.revokeObjectURL(videoUrl);
  videoUrl = URL.createObjectURL(file);
  video.src = videoUrl;
  const duration = (result.video && result.video.duration_seconds) || 0;
  const timeline = $("timeline");
  timeline.replaceChildren();
  $("timeline-end").textContent = duration ? `${fixed(duration)} s` : "";
  const legend = [];
  const at = (seconds) => `${(100 * Math.min(Math.max(seconds / duration, 0), 1)).toFixed(3)}%`;
  const read = result.video && result.video.seconds_read;
  if (duration && read) {
    timeline.append(el("div", { class: "read-span", style: `left:${at(read[0])};width:calc(${at(read[1])} - ${at(read[0])})`,
      title: "The span the model read" }));
    legend.push(el("span", {}, el("span", { class: "swatch", style: "background:#cfe0f1" }), "read by the model"));
  }
  const parts = (result.evidence && result.evidence.parts) || [];
  const rows = Math.max(parts.length, 1);
  timeline.style.height = `${Math.max(3.2, 0.3 + rows * 1.05)}rem`;
  parts.forEach((part, k) => {
    const span = part.span_seconds;
    if (!duration || !span || span[0] === null) return;
    const colour = `var(--part-${(k % 8) + 1})`;
    const button = el("button", {
      type: "button", class: "part-span", "data-part": part.part, "data-start": span[0],
      style: `left:${at(span[0])};width:calc(${at(span[1])} - ${at(span[0])});top:${0.2 + k * 1.05}rem;background:${colour}`,
      title: `Part ${part.part + 1}: ${fixed(span[0])} s to ${fixed(span[1])} s; its own predicted difference ${signed(part.relative)}. Click to see it.`,
      "aria-label": `Part ${part.part + 1}, ${fixed(span[0])} to ${fixed(span[1])} seconds`,
    });
    button.addEventListener("click", (event) => { event.stopPropagation(); seek(span[0]); });
    timeline.append(button);
    legend.push(el("span", {}, el("span", { class: "swatch", style: `background:${colour}` }), `part ${part.part + 1}`));
  });
  const playhead = el("div", { class: "playhead", style: "left:0" });
  timeline.append(playhead);
  video.ontimeupdate = () => { if (duration) playhead.style.left = at(video.currentTime); };
  timeline.onclick = (event) => {
    if (!duration) return;
    const box = timeline.getBoundingClientRect();
    seek(((event.clientX - box.left) / box.width) * duration);
  };
  if (parts.length) legend.push(el("span", { class: "note" }, "TPT's temporal parts: click one to see it."));
  $("timeline-legend").replaceChildren(...legend);
}

function seek(seconds) {
  const video = $("video");
  video.currentTime = seconds;
}

function renderAlignment(alignment) {
  const block = $("alignment-block");
  if (!alignment || !Array.isArray(alignment.path) || !alignment.path.length) { block.hidden = true; return; }
  const queryClips = Math.max(...alignment.path.map(([i]) => i)) + 1;
  const exemplarClips = Math.max(...alignment.path.map(([, j]) => j)) + 1;
  const clipSeconds = alignment.query_clip_seconds || [];
  $("alignment-text").textContent = `Each clip of this dive (across) is matched with a clip of exemplar ${alignment.exemplar_id} (down), `
    + `the closest among those that voted, by dynamic time warping. Mean cost ${fixed(alignment.mean_cost)} `
    + "(0 = the same motion, 4 = opposite). Click a column to see that clip.";
  $("alignment-chart").replaceChildren(alignmentChart({
    path: alignment.path, queryClips, exemplarClips,
    onSelect: (i) => { if (clipSeconds[i] && clipSeconds[i][0] !== null) seek(clipSeconds[i][0]); },
  }));
  block.hidden = false;
}

function renderVotes(result) {
  const block = $("votes-block");
  if (result.exemplar_free || !result.votes.length) {
    $("votes-text").textContent = "This model scores without exemplars: there are no votes to show.";
    $("vote-chart").replaceChildren();
    $("votes-table").hidden = true;
    block.hidden = false;
    return;
  }
  const execution = labelKind ? labelKind === "execution" : result.execution_score !== null;
  const factor = execution && result.difficulty ? result.difficulty : 1;
  const unit = execution ? "execution points" : "points";
  const votes = result.votes.map((vote) => ({ ...vote, value: vote.vote * factor }));
  $("votes-text").textContent = `${votes.length} exemplars of known score voted. Each vote is the exemplar's `
    + `${execution ? "execution" : "score"} plus the difference the model predicted between this dive and it`
    + `${execution ? ", times this dive's difficulty" : ""}; the score is their mean.`;
  $("vote-chart").replaceChildren(voteChart({ votes, score: result.score, low: result.interval.low, high: result.interval.high }));
  const table = $("votes-table");
  table.hidden = false;
  table.tHead.replaceChildren(el("tr", {},
    el("th", {}, "Exemplar"), el("th", { class: "num" }, "Its score"), el("th", { class: "num" }, "Difficulty"),
    el("th", {}, "Dive code"), el("th", { class: "num" }, `Predicted difference (${unit})`),
    el("th", { class: "num" }, "Vote (points)"), el("th", {}, "Chosen because")));
  table.tBodies[0].replaceChildren(...votes.map((vote) => el("tr", {},
    el("td", {}, vote.id), el("td", { class: "num" }, fixed(vote.final_score)),
    el("td", { class: "num" }, vote.difficulty === null ? "–" : fixed(vote.difficulty, 1)),
    el("td", {}, vote.action_class || "–"), el("td", { class: "num" }, signed(vote.relative)),
    el("td", { class: "num vote-value" }, fixed(vote.value)), el("td", { class: "note" }, vote.selected_because))));
  block.hidden = false;
}

function signed(value) {
  return value === null || value === undefined ? "–" : `${value >= 0 ? "+" : "−"}${Math.abs(value).toFixed(2)}`;
}
