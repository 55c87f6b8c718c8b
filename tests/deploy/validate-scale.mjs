// Offline checks of deploy/scale (three resattn replicas behind HAProxy): the relations between
// HAProxy's settings and the replicas' that make a rolling restart lose no request
// (deploy/README.md, "Behind a load balancer"). Reads the compose file as `docker-compose
// config` rendered it and haproxy.cfg as text.
//
//   node validate-scale.mjs RENDERED-COMPOSE.yaml HAPROXY.cfg
// Prints one line per check and "scale: N passed, N failed"; exits 1 on any failure.
import fs from "node:fs";
import { parse } from "yaml";

import { check, finish } from "./check.mjs";

// HAProxy time: "500ms", "1s", "2m", a bare number is milliseconds.
function ms(t) {
  const m = /^(\d+)(us|ms|s|m|h|d)?$/.exec(String(t ?? ""));
  if (!m) return NaN;
  const mul = { us: 0.001, ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 }[m[2] || "ms"];
  return Number(m[1]) * mul;
}
const duration = (s) => ms(String(s).replace(/^(\d+)s$/, "$1s"));

const [composeFile, cfgFile] = process.argv.slice(2);
if (!composeFile || !cfgFile) {
  console.error("usage: node validate-scale.mjs RENDERED-COMPOSE.yaml HAPROXY.cfg");
  process.exit(2);
}
const compose = parse(fs.readFileSync(composeFile, "utf8"));
const cfg = fs
  .readFileSync(cfgFile, "utf8")
  .split("\n")
  .map((l) => l.replace(/#.*/, "").trim())
  .filter(Boolean);
// the words after `key` on the first line starting with it (e.g. "timeout server")
const line = (key) => cfg.find((l) => l === key || l.startsWith(key + " "))?.slice(key.length).trim();
const words = (s) => (s || "").split(/\s+/);
const opt = (list, name) => {
  const i = list.indexOf(name);
  return i >= 0 ? list[i + 1] : undefined;
};

const replicas = Object.entries(compose.services || {}).filter(([, s]) =>
  Object.keys(s.environment || {}).some((k) => k.startsWith("RESATTN_")),
);
check(replicas.length >= 3, `compose: at least three resattn replicas`, `${replicas.length}`);
const servers = cfg.filter((l) => l.startsWith("server "));
const names = servers.map((l) => words(l)[2]?.split(":")[0]);
check(
  replicas.every(([n]) => names.includes(n)),
  "haproxy.cfg: a server line for every replica (by its compose service name)",
  `${names} vs ${replicas.map(([n]) => n)}`,
);
const ds = words(line("default-server"));
const inter = ms(opt(ds, "inter") ?? "2s");
const fall = Number(opt(ds, "fall") ?? 3);
const checkTimeout = ms(line("timeout check") ?? opt(ds, "inter"));
check(ds.includes("check"), "haproxy.cfg: health checks on every server");
check(/^GET$/.test(opt(words(line("http-check send")), "meth") || ""), "haproxy.cfg: health check is an HTTP GET");
check(opt(words(line("http-check send")), "uri") === "/readyz", "haproxy.cfg: health check on /readyz (503 while draining)");
check(line("http-check expect") === "status 200", "haproxy.cfg: only 200 counts as healthy");
check(words(line("retry-on")).includes("conn-failure") && words(line("retry-on")).includes("empty-response"),
  "haproxy.cfg: retry-on conn-failure empty-response (requests a replica never answered)");
check(!words(line("retry-on")).includes("response-timeout"), "haproxy.cfg: no retry of timed-out responses (would double load)");
check(cfg.some((l) => /^option redispatch\b/.test(l)), "haproxy.cfg: option redispatch (a retry goes to another replica)");
check(Number(line("retries")) >= 1, "haproxy.cfg: retries >= 1");
const serverTimeout = ms(line("timeout server"));
const keepAlive = ms(line("timeout http-keep-alive"));
for (const [name, s] of replicas) {
  const env = s.environment || {};
  const delay = Number(env.RESATTN_DRAIN_DELAY_MS ?? 0);
  const drain = Number(env.RESATTN_DRAIN_TIMEOUT_MS ?? 30000);
  const request = Number(env.RESATTN_REQUEST_TIMEOUT_MS ?? 30000);
  const idle = Number(env.RESATTN_CONNECTION_TIMEOUT_S ?? 30) * 1000;
  const grace = duration(s.stop_grace_period ?? "10s");
  check(inter * fall + checkTimeout < delay,
    `${name}: check inter x fall + timeout check < RESATTN_DRAIN_DELAY_MS (HAProxy takes it out before its listener closes)`,
    `${inter} x ${fall} + ${checkTimeout} >= ${delay} ms`);
  check(serverTimeout > request, `${name}: timeout server > RESATTN_REQUEST_TIMEOUT_MS (the replica's 504 comes first)`,
    `${serverTimeout} <= ${request}`);
  check(keepAlive < idle, `${name}: timeout http-keep-alive < RESATTN_CONNECTION_TIMEOUT_S (HAProxy closes idle connections first)`,
    `${keepAlive} >= ${idle}`);
  check(grace > delay + drain, `${name}: stop_grace_period > drain delay + drain timeout (SIGTERM ends in exit 0, not SIGKILL)`,
    `${grace} <= ${delay} + ${drain} ms`);
  check(!s.ports, `${name}: publishes no port (only HAProxy reaches it)`);
  check(!s.healthcheck, `${name}: no compose healthcheck (the image has no shell; HAProxy checks /readyz)`);
}
finish("scale");
