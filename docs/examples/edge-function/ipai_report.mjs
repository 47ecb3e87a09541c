// Report failures of a Node.js or Deno edge function exactly like ipai_ops services do:
// an RFC 9457 problem response for the caller, and the failure as OpenTelemetry (an ERROR
// span with an `exception` event carrying `ipai.failure.code`) over OTLP/HTTP JSON to the
// collector or the ipai-ops bridge, which turns it into a row of ops.agent_errors.
//
// No dependencies: it uses only web-standard APIs (fetch, Request, Response, crypto),
// present in Deno, Node.js 18+, Supabase/Vercel/Cloudflare edge runtimes.
// See docs/edge_functions.md for the OpenTelemetry JS SDK variant.

const PROBLEM_TYPE = "urn:ipai:failure:";
const CORRELATION_HEADERS = ["x-correlation-id", "x-request-id"];
const CORRELATION_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** A failure with a registry code (ssot/errors/failure_modes.yaml) and its HTTP status. */
export class Failure extends Error {
  constructor(code, message, { status = 500, retryable = false, details = undefined } = {}) {
    super(message);
    this.name = "Failure";
    this.code = code;
    this.status = status;
    this.retryable = retryable;
    this.details = details;
  }
}

function env(name) {
  if (typeof Deno !== "undefined") return Deno.env.get(name);
  return globalThis.process?.env?.[name];
}

function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

// W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>
function parentFrom(request) {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/.exec(request.headers.get("traceparent") ?? "");
  if (!m || /^0+$/.test(m[1]) || /^0+$/.test(m[2])) return null;
  return { traceId: m[1], parentSpanId: m[2] };
}

function correlationFrom(request) {
  for (const name of CORRELATION_HEADERS) {
    const value = request.headers.get(name);
    if (value && CORRELATION_RE.test(value)) return value;
  }
  return crypto.randomUUID().replaceAll("-", "");
}

const str = (key, value) => ({ key, value: { stringValue: String(value) } });

/** The OTLP/JSON ExportTraceServiceRequest for one failed request (opentelemetry-proto JSON mapping). */
export function failureTraces(error, { request, service, source, serviceVersion, environment, correlationId, startNanos }) {
  const parent = parentFrom(request);
  const traceId = parent?.traceId ?? randomHex(16);
  const spanId = randomHex(8);
  const endNanos = BigInt(Date.now()) * 1_000_000n;
  const url = new URL(request.url);
  const typed = error instanceof Failure;
  const exceptionAttributes = [
    str("exception.type", typed ? `Failure` : error?.name ?? typeof error),
    str("exception.message", error?.message ?? String(error)),
    str("exception.stacktrace", error?.stack ?? ""),
    str("ipai.correlation_id", correlationId),
    str("ipai.source", source),
  ];
  if (typed) exceptionAttributes.push(str("ipai.failure.code", error.code));
  const spanAttributes = [
    str("http.request.method", request.method),
    str("url.path", url.pathname),
    str("ipai.correlation_id", correlationId),
  ];
  if (typed) spanAttributes.push(str("ipai.failure.code", error.code), str("error.type", error.code));
  const resourceAttributes = [str("service.name", service), str("ipai.source", source)];
  if (serviceVersion) resourceAttributes.push(str("service.version", serviceVersion));
  if (environment) resourceAttributes.push(str("deployment.environment.name", environment));
  return {
    resourceSpans: [{
      resource: { attributes: resourceAttributes },
      scopeSpans: [{
        scope: { name: "ipai-edge-report", version: "1" },
        spans: [{
          traceId,
          spanId,
          ...(parent ? { parentSpanId: parent.parentSpanId } : {}),
          name: `${request.method} ${url.pathname}`,
          kind: 2, // SPAN_KIND_SERVER
          startTimeUnixNano: String(startNanos ?? endNanos),
          endTimeUnixNano: String(endNanos),
          attributes: spanAttributes,
          events: [{ name: "exception", timeUnixNano: String(endNanos), attributes: exceptionAttributes }],
          status: { code: 2, message: typed ? error.code : String(error?.message ?? error).slice(0, 256) },
        }],
      }],
    }],
  };
}

/** The RFC 9457 problem document. Untyped errors never leak their message to the caller. */
export function problemFor(error, { request, correlationId }) {
  const typed = error instanceof Failure;
  const code = typed ? error.code : "UNCLASSIFIED.UNKNOWN";
  return {
    type: PROBLEM_TYPE + code,
    title: typed ? code : "Internal error",
    status: typed ? error.status : 500,
    detail: typed ? error.message : `The request failed; quote correlation id ${correlationId}.`,
    instance: new URL(request.url).pathname,
    ipai: { code, retryable: typed ? error.retryable : false, correlation_id: correlationId },
  };
}

async function send(body, { endpoint, headers }) {
  try {
    const response = await fetch(`${endpoint.replace(/\/$/, "")}/v1/traces`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
    if (!response.ok) console.error(`ipai report: collector answered ${response.status}`);
    return response.status;
  } catch (err) {
    console.error(`ipai report: collector unreachable: ${err}`); // never fail the caller's request
    return 0;
  }
}

function otlpHeaders() {
  // OTEL_EXPORTER_OTLP_HEADERS: "key1=value1,key2=value2" (OpenTelemetry SDK configuration spec)
  const out = {};
  for (const pair of (env("OTEL_EXPORTER_OTLP_HEADERS") ?? "").split(",")) {
    const at = pair.indexOf("=");
    if (at > 0) out[pair.slice(0, at).trim()] = decodeURIComponent(pair.slice(at + 1).trim());
  }
  return out;
}

/**
 * Wrap a fetch-style handler `(request) => Response`. An exception escaping it becomes a
 * problem response, and is reported over OTLP. `waitUntil` (Deno Deploy, Supabase
 * `EdgeRuntime.waitUntil`, Vercel, Cloudflare `ctx.waitUntil`) lets the report finish after
 * the response is sent; without it the report is awaited first.
 */
export function withFailureReport(handler, options = {}) {
  const service = options.service ?? env("OTEL_SERVICE_NAME") ?? "edge-function";
  const source = options.source ?? "edge";
  const endpoint = options.endpoint ?? env("OTEL_EXPORTER_OTLP_ENDPOINT") ?? "http://127.0.0.1:4318";
  const headers = options.headers ?? otlpHeaders();
  return async (request, ...rest) => {
    const startNanos = BigInt(Date.now()) * 1_000_000n;
    try {
      return await handler(request, ...rest);
    } catch (error) {
      const correlationId = correlationFrom(request);
      const traces = failureTraces(error, {
        request, service, source, correlationId, startNanos,
        serviceVersion: options.serviceVersion ?? env("SERVICE_VERSION"),
        environment: options.environment ?? env("DEPLOYMENT_ENVIRONMENT"),
      });
      const sending = send(traces, { endpoint, headers });
      if (options.waitUntil) options.waitUntil(sending);
      else await sending;
      const problem = problemFor(error, { request, correlationId });
      const responseHeaders = { "content-type": "application/problem+json", "x-correlation-id": correlationId };
      if (problem.ipai.retryable && (problem.status === 429 || problem.status === 503)) responseHeaders["retry-after"] = "30";
      return new Response(JSON.stringify(problem), { status: problem.status, headers: responseHeaders });
    }
  };
}
