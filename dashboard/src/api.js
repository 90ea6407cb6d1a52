// The control plane's HTTP API, as the dashboard calls it: the session travels in the
// HttpOnly cookie, and every change echoes the CSRF cookie in x-csrf-token.

/** An API refusal: its HTTP status, the API's stable code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function csrfToken() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("tollgate_csrf="));
  return found ? decodeURIComponent(found.slice("tollgate_csrf=".length)) : "";
}

/** Calls `method path` with an optional JSON body; the parsed JSON answer, or null for 204. */
export async function call(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET") headers["x-csrf-token"] = csrfToken();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "unreachable", "The control plane cannot be reached.");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const error = json && json.error ? json.error : {};
    throw new ApiError(response.status, error.code || "error", error.message || response.statusText);
  }
  return json;
}

/** `path` with the non-empty entries of `params` as its query string. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}
