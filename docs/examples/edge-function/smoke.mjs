// Drives handler.mjs with three requests and prints what came back, one JSON line each.
// Used by tests/bridge/test_edge_example.py against a real bridge; runs on Node.js 18+ and Deno.
import handler from "./handler.mjs";

const secret = "whsec-edge-example";
const encoder = new TextEncoder();
async function sign(body) {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(body)));
  return "sha256=" + Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

const cases = [
  ["good", '{"type":"invoice.paid"}', true],
  ["forged", '{"type":"invoice.paid"}', false],
  ["malformed", "{not json", true],
];
for (const [name, body, signed] of cases) {
  const headers = { "x-correlation-id": `edge-smoke-${name}`, "x-hub-signature-256": signed ? await sign(body) : "sha256=00" };
  const response = await handler.fetch(new Request("https://edge.example.com/hooks/billing", { method: "POST", body, headers }));
  console.log(JSON.stringify({
    case: name,
    status: response.status,
    contentType: response.headers.get("content-type"),
    correlationId: response.headers.get("x-correlation-id"),
    body: await response.json(),
  }));
}
