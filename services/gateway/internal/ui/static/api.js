// The REST API of the gateway that served this page, by relative URLs: same origin, so no CORS.
// Requests and responses are protojson (lowerCamelCase names); errors are google.rpc.Status.

// APIError is a failed call: the google.rpc.Status the gateway answered with, or one made up
// here (code 14, UNAVAILABLE) when the network or the body failed.
export class APIError extends Error {
  constructor(status, httpStatus) {
    super(status.message || `HTTP ${httpStatus}`);
    this.name = 'APIError';
    this.code = status.code ?? 2;
    this.details = status.details ?? [];
    this.httpStatus = httpStatus;
  }
}

let accessToken = '';

// setToken makes later calls carry "Authorization: Bearer <token>"; '' sends none.
export function setToken(token) {
  accessToken = token || '';
}

function headers(extra) {
  const h = { Accept: 'application/json', ...extra };
  if (accessToken) h.Authorization = `Bearer ${accessToken}`;
  return h;
}

// toStatus reads a failed response's body as a google.rpc.Status; a body that is not one (a
// proxy's HTML page) still gives an error with the HTTP status.
async function toStatus(resp) {
  try {
    const body = await resp.json();
    if (body && typeof body === 'object' && 'code' in body) return body;
  } catch { /* not JSON */ }
  return { code: 2, message: `HTTP ${resp.status} ${resp.statusText}` };
}

// call sends one unary request and returns the decoded response, or throws an APIError.
export async function call(method, path, body, { signal } = {}) {
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new APIError({ code: 14, message: `network error: ${err.message}` }, 0);
  }
  if (!resp.ok) throw new APIError(await toStatus(resp), resp.status);
  return resp.json();
}

// stream opens a server-streaming call and yields each message's result. grpc-gateway answers
// newline-delimited JSON, one {"result": ...} or a final {"error": Status} per line. EventSource
// cannot send an Authorization header, hence fetch and the body's reader. Aborting signal ends
// the request, which cancels the call at the service.
export async function* stream(path, { signal } = {}) {
  const resp = await fetch(path, { headers: headers(), signal });
  if (!resp.ok) throw new APIError(await toStatus(resp), resp.status);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line);
      if (msg.error) throw new APIError(msg.error, resp.status);
      yield msg.result;
    }
  }
}

// describe turns an error's details into lines for people: field violations, precondition
// failures and quota violations name what was wrong; other details are left out.
export function describe(err) {
  const lines = [];
  for (const d of err.details ?? []) {
    const type = (d['@type'] || '').split('/').pop();
    for (const v of d.fieldViolations ?? []) lines.push(`${v.field}: ${v.description}`);
    if (type === 'google.rpc.PreconditionFailure') {
      for (const v of d.violations ?? []) lines.push(`${v.subject || v.type}: ${v.description}`);
    }
    if (type === 'google.rpc.QuotaFailure') {
      for (const v of d.violations ?? []) lines.push(`${v.subject}: ${v.description}`);
    }
    if (type === 'google.rpc.RetryInfo' && d.retryDelay) lines.push(`retry after ${d.retryDelay}`);
  }
  return lines;
}
