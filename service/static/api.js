// The pages' link to the scoring API: the session's API key, requests, and every error put in words.
// Pages use only the public API (/v1/...), with the key the user typed (kept in sessionStorage: it is
// gone when the browser tab closes).

const KEY_STORAGE = "aqa.apiKey";
const UNREACHABLE = "The scoring server could not be reached. Check the network connection and that the server is running, then try again.";
const FIELD_LABELS = {
  difficulty: "Difficulty", action_class: "Dive code", competition: "Competition", event: "Event",
  diver: "Diver", round: "Round", video: "Video", folder: "Folder", labels_csv: "Labels CSV",
};

export class ApiProblem extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

export function authHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

/** fetch() a /v1 route with the session's key; resolves with the Response, or throws an ApiProblem in words. */
export async function api(path, { method = "GET", json, body } = {}) {
  const headers = authHeaders();
  if (json !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: json !== undefined ? JSON.stringify(json) : body });
  } catch {
    throw new ApiProblem(0, "unreachable", UNREACHABLE);
  }
  if (!response.ok) throw problemFrom(response.status, await response.text());
  return response;
}

export async function apiJson(path, options) {
  return (await api(path, options)).json();
}

/** The ApiProblem for an error answer: the server's own words where it gave some, never the raw body. */
export function problemFrom(status, text) {
  let error = null;
  try { error = JSON.parse(text).error; } catch { /* not our JSON error body: say it by status below */ }
  const code = (error && error.code) || `http_${status}`;
  return new ApiProblem(status, code, explain(status, code, error));
}

function explain(status, code, error) {
  if (code === "missing_api_key") return "This server needs an API key. Enter the key your operator gave you.";
  if (code === "invalid_api_key") return "This API key is not valid on this server. Check it and enter it again.";
  if (code === "forbidden") return "This API key may only read results: scoring a dive needs a key with the 'score' role.";
  if (error && Array.isArray(error.details) && error.details.length) {
    return "Please check: " + error.details.map((d) => `${fieldLabel(d.field)}: ${d.problem}`).join("; ") + ".";
  }
  if (error && typeof error.message === "string" && error.message) return error.message;
  if (status === 0) return UNREACHABLE;
  if (status === 413) return "The video is larger than this server accepts.";
  if (status === 429) return "The server is busy scoring other dives. Try again in a few seconds.";
  if (status >= 500) return `The server met a problem (HTTP ${status}). Try again; if it persists, tell the operator.`;
  return `The server refused the request (HTTP ${status}).`;
}

function fieldLabel(field) {
  const name = String(field || "").split(".").pop();
  return FIELD_LABELS[name] || name;
}

// ---- the key panel and the header's key status -------------------------------------------------

let onKeyChange = () => {};

/** Check access and ask for a key when the server needs one; calls ready() once the pages can read. */
export function setupKey(ready) {
  onKeyChange = ready;
  const form = document.getElementById("key-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = document.getElementById("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    await probe();
  });
  probe();
}

/** Show the key panel with a message (a 401 from any request). */
export function askForKey(message) {
  const panel = document.getElementById("key-panel");
  panel.hidden = false;
  const text = document.getElementById("key-message");
  text.textContent = message;
  text.hidden = !message;
  document.getElementById("key-input").focus();
  renderKeyStatus(false);
}

async function probe() {
  try {
    await api("/v1/models");
  } catch (problem) {
    if (problem.status === 401) {
      if (problem.code === "invalid_api_key") sessionStorage.removeItem(KEY_STORAGE);
      askForKey(problem.message);
      return;
    }
    // Anything else (server unreachable, 503) is shown by the page's own requests.
  }
  document.getElementById("key-panel").hidden = true;
  renderKeyStatus(true);
  onKeyChange();
}

function renderKeyStatus(accepted) {
  const status = document.getElementById("key-status");
  status.replaceChildren();
  if (!accepted) {
    status.textContent = "No API key";
    return;
  }
  if (!apiKey()) {
    status.textContent = "This server needs no API key";
    return;
  }
  status.append("API key in use for this session");
  const forget = el("button", { type: "button", id: "forget-key" }, "Forget");
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    document.getElementById("key-input").value = "";
    probe();
  });
  status.append(forget);
}

// ---- small DOM helpers (text goes in as text: nothing from the server is parsed as HTML) ---------

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function fixed(value, digits = 2) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}

export function showMessage(node, text, kind = "error") {
  node.className = `message ${kind}`;
  node.textContent = text;
  node.hidden = !text;
}

export function markCurrentPage() {
  for (const link of document.querySelectorAll(".topbar nav a")) {
    if (link.getAttribute("href") === window.location.pathname) link.setAttribute("aria-current", "page");
  }
}
