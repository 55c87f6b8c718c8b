// Offline validation of the compose stack in deploy/: the rendered compose file (output of
// `docker-compose config`), the Prometheus scrape config, and Grafana's provisioning and
// dashboard. Checks that the pieces point at each other (scrape target = service:port,
// datasource URL = Prometheus service, dashboard provider path = mounted folder, every panel's
// datasource = the provisioned uid), that the resattn service is hardened (read-only, no
// capabilities, loopback-published ports by default, grace period longer than the drain), and
// that the dashboard has the panels the issue asks for. Writes every dashboard query as a
// recording rule to RULES_OUT so `promtool check rules` can parse the PromQL, and the metric
// names the dashboard reads to METRICS_OUT (one per line) for the smoke test to find in a real
// /metrics answer.
//
//   node validate-compose.mjs DEPLOY_DIR RENDERED_COMPOSE.yaml RULES_OUT METRICS_OUT
// Prints one line per check and "compose: N passed, N failed"; exits 1 on any failure.
import fs from "node:fs";
import path from "node:path";
import { parse } from "yaml";

import { check, finish } from "./check.mjs";
const readYaml = (f) => parse(fs.readFileSync(f, "utf8"));

// "30s" / "1m30s" -> milliseconds (compose durations).
function durationMs(s) {
  let ms = 0;
  for (const [, n, u] of String(s).matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g))
    ms += Number(n) * { ms: 1, s: 1000, m: 60000, h: 3600000 }[u];
  return ms;
}

function composeChecks(deployDir, compose) {
  const svc = compose.services || {};
  for (const s of ["resattn", "prometheus", "grafana"]) check(!!svc[s], `compose: service ${s}`);
  const r = svc.resattn || {};
  check(r.read_only === true, "compose: resattn read-only root filesystem");
  check((r.cap_drop || []).includes("ALL"), "compose: resattn drops ALL capabilities");
  check(
    (r.security_opt || []).some((o) => /^no-new-privileges(:true)?$/.test(o)),
    "compose: resattn no-new-privileges",
  );
  const ports = r.ports || [];
  check(
    ports.length > 0 && ports.every((p) => (p.host_ip ?? String(p).split(":")[0]) === "127.0.0.1"),
    "compose: ports published on 127.0.0.1 by default",
    JSON.stringify(ports),
  );
  const env = r.environment || {};
  const drain = Number(env.RESATTN_DRAIN_TIMEOUT_MS ?? 30000);
  check(
    durationMs(r.stop_grace_period ?? "10s") > drain,
    "compose: stop_grace_period longer than RESATTN_DRAIN_TIMEOUT_MS",
    `${r.stop_grace_period} vs ${drain} ms`,
  );
  check(!!r.build && !!r.image, "compose: resattn builds the repository's Dockerfile and tags it");

  // Prometheus: its config is the file mounted into the container, and it scrapes resattn.
  const pvols = (svc.prometheus?.volumes || []).map((v) => (typeof v === "string" ? v : `${v.source}:${v.target}`));
  const promCfgMount = pvols.find((v) => v.includes("/etc/prometheus/prometheus.yml"));
  check(!!promCfgMount, "compose: prometheus.yml mounted into Prometheus");
  const promCfg = readYaml(path.join(deployDir, "prometheus", "prometheus.yml"));
  const job = (promCfg.scrape_configs || []).find((j) => j.job_name === "resattn");
  const targets = (job?.static_configs || []).flatMap((s) => s.targets || []);
  check(targets.includes("resattn:8080"), "prometheus: job resattn scrapes resattn:8080", JSON.stringify(targets));
  check((job?.metrics_path ?? "/metrics") === "/metrics", "prometheus: scrapes /metrics");

  // Grafana: provisioned datasource and dashboards folder line up with the mounts.
  const gvols = (svc.grafana?.volumes || []).map((v) =>
    typeof v === "string" ? v.split(":") : [v.source, v.target],
  );
  const dashMount = gvols.find(([src]) => String(src).replace(/\/$/, "").endsWith("grafana/dashboards"));
  check(!!gvols.find(([, t]) => t === "/etc/grafana/provisioning"), "compose: Grafana provisioning mounted");
  const prov = readYaml(path.join(deployDir, "grafana/provisioning/dashboards/resattn.yml"));
  check(
    !!dashMount && prov.providers?.[0]?.options?.path === dashMount[1],
    "grafana: dashboard provider path is the mounted dashboards folder",
  );
  const ds = readYaml(path.join(deployDir, "grafana/provisioning/datasources/prometheus.yml"));
  const pds = (ds.datasources || []).find((d) => d.type === "prometheus");
  check(pds?.url === "http://prometheus:9090", "grafana: datasource URL is the Prometheus service");
  return pds?.uid;
}

// Required panels: [title pattern, metric names the panel's queries must read, extra test].
const REQUIRED = [
  [/requests\/s by status/i, ["resattn_http_requests_total"], (e) => /by \(code\)/.test(e)],
  [/latency/i, ["resattn_request_duration_seconds_bucket"], (e) => ["0.5", "0.95", "0.99"].every((q) => e.includes(`histogram_quantile(${q},`))],
  [/queue depth/i, ["resattn_queue_depth"]],
  [/batch-size/i, ["resattn_batch_size_bucket"]],
  [/rejections/i, ["resattn_requests_rejected_total"], (e) => /by \(reason\)/.test(e)],
  [/cpu/i, ["process_cpu_seconds_total"]],
  [/memory/i, ["process_resident_memory_bytes", "resattn_memory_budget_bytes", "resattn_memory_in_use_bytes"]],
  [/serving version/i, ["resattn_model_serving_version"]],
  [/model loads/i, ["resattn_model_loads_total"], (e) => /by \(model, result\)/.test(e)],
  [/loaded versions/i, ["resattn_model_versions_loaded"]],
  [/by model version/i, ["resattn_model_requests_total"], (e) => /by \(model, version, result\)/.test(e)],
];

function dashboardChecks(deployDir, uid, rulesOut, metricsOut) {
  const file = path.join(deployDir, "grafana/dashboards/resattn.json");
  let d;
  try {
    d = JSON.parse(fs.readFileSync(file, "utf8"));
    check(true, `grafana: ${file} is JSON`);
  } catch (e) {
    return check(false, `grafana: ${file} is JSON`, e.message);
  }
  check(!!d.uid && !!d.title, "grafana: dashboard has uid and title");
  const panels = d.panels || [];
  const ids = panels.map((p) => p.id);
  check(new Set(ids).size === ids.length, "grafana: panel ids unique");
  // Panels must not overlap on the 24-column grid.
  const overlap = panels.some((a, i) =>
    panels.slice(i + 1).some((b) => {
      const A = a.gridPos, B = b.gridPos;
      return A.x < B.x + B.w && B.x < A.x + A.w && A.y < B.y + B.h && B.y < A.y + A.h;
    }),
  );
  check(!overlap && panels.every((p) => p.gridPos.x + p.gridPos.w <= 24), "grafana: panels fit the grid without overlap");
  const targets = panels.flatMap((p) => (p.targets || []).map((t) => ({ p, t })));
  check(
    targets.length > 0 && targets.every(({ p, t }) => (t.datasource || p.datasource)?.uid === uid),
    `grafana: every query uses the provisioned datasource ${uid}`,
  );
  for (const [re, metrics, extra] of REQUIRED) {
    const p = panels.find((x) => re.test(x.title));
    const exprs = (p?.targets || []).map((t) => t.expr).join("\n");
    check(
      !!p && metrics.every((m) => exprs.includes(m)) && (!extra || extra(exprs)),
      `grafana: panel ${re} reads ${metrics.join(", ")}`,
    );
  }
  // The dashboard's PromQL as recording rules, with Grafana's variables substituted.
  const rules = targets.map(({ p, t }) => ({
    record: `resattn:dashboard_panel${p.id}:${t.refId}`,
    expr: t.expr
      .replaceAll("$__rate_interval", "1m")
      .replaceAll("$job", "resattn")
      .replaceAll("$instance", ".*"),
  }));
  fs.writeFileSync(rulesOut, JSON.stringify({ groups: [{ name: "dashboard", rules }] }, null, 2));
  const names = new Set();
  for (const { t } of targets)
    for (const [m] of t.expr.matchAll(/\b(?:resattn|process)_[a-z_]+\b/g)) names.add(m);
  fs.writeFileSync(metricsOut, [...names].sort().join("\n") + "\n");
  check(names.size >= 7, `grafana: dashboard reads ${names.size} metrics`);
}

function main() {
  const [deployDir, rendered, rulesOut, metricsOut] = process.argv.slice(2);
  if (!metricsOut) {
    console.error("usage: node validate-compose.mjs DEPLOY_DIR RENDERED_COMPOSE.yaml RULES_OUT METRICS_OUT");
    process.exit(2);
  }
  const uid = composeChecks(deployDir, readYaml(rendered));
  dashboardChecks(deployDir, uid, rulesOut, metricsOut);
  finish("compose");
}

try {
  main();
} catch (e) {
  console.error(`validate-compose: ${e.stack || e}`);
  process.exit(1);
}
