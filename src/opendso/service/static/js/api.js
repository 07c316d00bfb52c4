// REST and WebSocket access to the control-room API (contract: issue 4). Cookie session + CSRF header.

let csrfToken = null;

/** Error carrying the HTTP status and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Remember the CSRF token returned by login or /api/auth/me. */
export function setCsrf(token) {
  csrfToken = token;
}

/** Call the API: JSON in, JSON out; state-changing calls carry X-CSRF-Token. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let message = response.statusText;
    try {
      const data = await response.json();
      message = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail ?? data);
    } catch {
      /* not JSON */
    }
    throw new ApiError(response.status, message);
  }
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/**
 * Open the /api/stream WebSocket; reconnect with back-off until closed by stop().
 * handlers: {onMessage(msg), onState(connected:boolean), onEnded()}: onEnded when the server ends the session.
 */
export function openStream({ onMessage, onState, onEnded }) {
  let socket = null;
  let stopped = false;
  let delay = 500;
  const connect = () => {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/stream`;
    socket = new WebSocket(url);
    socket.onopen = () => {
      delay = 500;
      onState(true);
    };
    socket.onmessage = (event) => {
      try {
        onMessage(JSON.parse(event.data));
      } catch (err) {
        console.error("bad stream message", err);
      }
    };
    socket.onclose = (event) => {
      onState(false);
      // 1008: the server closed the stream because the session ended; reconnecting would not help
      if (event.code === 1008 && onEnded) {
        stopped = true;
        onEnded();
        return;
      }
      if (!stopped) {
        setTimeout(connect, delay);
        delay = Math.min(delay * 2, 10000);
      }
    };
  };
  connect();
  return {
    stop() {
      stopped = true;
      socket?.close();
    },
  };
}
