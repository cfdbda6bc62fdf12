// The JSON API, called with the session cookie. State-changing calls carry
// the CSRF token the server put in the page; a 401 (session expired or
// signed out elsewhere) reloads "/", which shows the sign-in form.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.field = error.field;
  }
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    signal, // a page's first load: aborted when the page is left meanwhile
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    window.location.assign("/");
    throw new ApiError(401, { code: "unauthorized", message: "signed out" });
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || { message: response.statusText });
  return data;
}

export const experimentPath = (id) => `/api/v1/experiments/${encodeURIComponent(id)}`;
