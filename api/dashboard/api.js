// Talking to /v1: the key from localStorage as `Authorization: Bearer`, never in a URL (URLs land in logs).
// Images and downloads are fetched with the header and shown through blob: URLs; the event stream is read
// with fetch and parsed here, because EventSource cannot send a header.

const KEY_STORAGE = "ganforge.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

/** An error answer of the API: status, code, message and details [{field, message}]. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

// Listeners told when an answer is 401, so the page can ask for the key.
const unauthorizedListeners = new Set();
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
}

async function check(response) {
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) unauthorizedListeners.forEach((listener) => listener());
  throw new ApiError(response.status, body);
}

/** JSON call: `api("/v1/jobs", {method: "POST", json: spec})`; resolves to the parsed body (null for 204). */
export async function api(path, { method = "GET", json, headers = {}, signal } = {}) {
  const init = { method, headers: authHeaders(headers), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await check(await fetch(path, init));
  return response.status === 204 ? null : response.json();
}

/** Every item of a paged list (`{<key>: [...], next_cursor}`), page after page: `allPages(url, "samples")`. */
export async function allPages(path, key, { signal } = {}) {
  const items = [];
  let cursor = null;
  do {
    const separator = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${separator}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, { signal });
    items.push(...page[key]);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/** A blob: URL for a file under /v1 (an image); the caller revokes it with URL.revokeObjectURL. */
export async function blobUrl(path, signal) {
  const response = await check(await fetch(path, { headers: authHeaders(), signal }));
  return URL.createObjectURL(await response.blob());
}

/** Download a file under /v1 as `filename` (fetched with the key, saved through a blob: URL). */
export async function download(path, filename) {
  const url = await blobUrl(path);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Upload a data set (multipart) with XMLHttpRequest, for its upload progress; onProgress(loaded, total). */
export function upload(form, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/datasets");
    const key = apiKey();
    if (key) request.setRequestHeader("Authorization", `Bearer ${key}`);
    request.upload.onprogress = (event) => onProgress(event.loaded, event.lengthComputable ? event.total : 0);
    request.onload = () => {
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch {
        body = null;
      }
      if (request.status >= 200 && request.status < 300) resolve(body);
      else {
        if (request.status === 401) unauthorizedListeners.forEach((listener) => listener());
        reject(new ApiError(request.status, body));
      }
    };
    request.onerror = () => reject(new ApiError(0, { error: { message: "the upload failed: network error" } }));
    request.send(form);
  });
}

/**
 * Follow a job's Server-Sent Events until its final status: onEvent({id, event, data}) with data parsed.
 * Reconnects after the server's retry interval with Last-Event-ID, so no event is lost or seen twice;
 * a 204 (finished, nothing more) or the abort signal ends it. Resolves when the stream is over.
 */
export async function followEvents(path, onEvent, signal) {
  let lastId = null;
  let retry = 1000;
  while (!signal.aborted) {
    let finished = false;
    try {
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const response = await fetch(path, { headers, signal });
      if (response.status === 204) return;
      await check(response);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let event = { data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop(); // an incomplete line waits for the next chunk
        for (const line of lines) {
          if (line === "") {
            if (event.data.length) {
              const data = JSON.parse(event.data.join("\n"));
              if (event.id !== undefined) lastId = event.id;
              onEvent({ id: Number(event.id), event: event.event || "message", data });
              if (event.event === "status" && ["succeeded", "failed", "cancelled"].includes(data.to)) finished = true;
            }
            event = { data: [] };
            continue;
          }
          if (line.startsWith(":")) continue; // a ping
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "data") event.data.push(text);
          else if (field === "id") event.id = text;
          else if (field === "event") event.event = text;
          else if (field === "retry" && /^\d+$/.test(text)) retry = Number(text);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) throw error; // not transient
    }
    if (finished) return;
    await new Promise((resolve) => setTimeout(resolve, retry));
  }
}
