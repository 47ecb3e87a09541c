// An edge function receiving signed webhooks, reporting its failures with ipai_report.mjs.
//
//   Deno:    deno serve --allow-env --allow-net handler.mjs
//   Node.js: any adapter that calls `fetch(request)`; smoke.mjs calls it directly.
//
// Environment: WEBHOOK_SECRET, OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT (the
// collector or the bridge, e.g. http://127.0.0.1:4318), OTEL_EXPORTER_OTLP_HEADERS.

import { Failure, withFailureReport } from "./ipai_report.mjs";

const encoder = new TextEncoder();

async function hmacHex(secret, message) {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(message)));
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

async function handle(request) {
  const secret = (typeof Deno !== "undefined" ? Deno.env.get("WEBHOOK_SECRET") : process.env.WEBHOOK_SECRET) ?? "";
  const body = await request.text();
  const given = (request.headers.get("x-hub-signature-256") ?? "").replace(/^sha256=/, "");
  const expected = await hmacHex(secret, body);
  if (!secret || !constantTimeEqual(given, expected)) {
    throw new Failure("WEBHOOK.SIGNATURE_INVALID", "signature does not match the request body", { status: 401 });
  }
  const event = JSON.parse(body); // malformed JSON escapes as an untyped SyntaxError
  return Response.json({ ok: true, received: event.type ?? null });
}

export default { fetch: withFailureReport(handle) };
