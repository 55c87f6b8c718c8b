// Offline validation of deploy/k8s: every manifest against the Kubernetes 1.27 schemas
// (kubernetes-models; types, enums and required fields — unknown fields are not caught, so
// the checks below read the exact fields we rely on), kustomization structure (resources and
// patches exist), and the properties the deployment promises: probes on /healthz and /readyz,
// non-root, read-only root filesystem, dropped capabilities, resources, the termination
// arithmetic (readiness probe + endpoint propagation <= drain delay; delay + drain timeout +
// margin <= grace period; liveness outlasts the drain; maxUnavailable 0 / maxSurge 1), and
// Service/HPA/PDB/annotations that point at the Deployment.
//
//   node validate-k8s.mjs DIR [NAME=RENDERED.yaml ...]
// DIR is deploy/k8s; each NAME=FILE is the output of `kubectl kustomize` for one entry point
// (e.g. base=/tmp/base.yaml custom-model=/tmp/custom.yaml), checked as a whole. Without
// rendered files the raw files of DIR/base are checked together instead.
// Prints one line per check and "k8s: N passed, N failed"; exits 1 on any failure.
import fs from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";

import { check, finish } from "./check.mjs";

function readDocs(file) {
  const docs = parseAllDocuments(fs.readFileSync(file, "utf8"));
  const out = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
    const v = d.toJS();
    if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

function yamlFiles(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(e.name)) out.push(p);
  }
  return out.sort();
}

// apiVersion "apps/v1" -> kubernetes-models/apps/v1; CRDs of the Prometheus Operator come from
// @kubernetes-models/prometheus-operator.
async function modelClass(apiVersion, kind) {
  const pkg = apiVersion.startsWith("monitoring.coreos.com/")
    ? `@kubernetes-models/prometheus-operator/${apiVersion}`
    : `kubernetes-models/${apiVersion}`;
  try {
    const mod = await import(pkg);
    return mod[kind] || null;
  } catch {
    return null;
  }
}

async function validateSchema(obj, where) {
  const what = `${where}: ${obj.kind}/${obj.metadata?.name} (${obj.apiVersion}) schema`;
  if (!obj.apiVersion || !obj.kind) return check(false, what, "no apiVersion/kind");
  const Cls = await modelClass(obj.apiVersion, obj.kind);
  if (!check(!!Cls, `${where}: ${obj.apiVersion} ${obj.kind} is a known API`)) return false;
  try {
    new Cls(obj).validate();
    return check(true, what);
  } catch (e) {
    return check(false, what, e.message);
  }
}

function kustomizationStructure(file) {
  const dir = path.dirname(file);
  const [k] = readDocs(file);
  check(k.kind === "Kustomization", `${file}: kind Kustomization`);
  for (const r of k.resources || []) {
    const p = path.join(dir, r);
    const ok =
      (fs.existsSync(p) && fs.statSync(p).isFile()) ||
      fs.existsSync(path.join(p, "kustomization.yaml"));
    check(ok, `${file}: resource ${r} exists`);
  }
  for (const pt of k.patches || []) {
    const p = path.join(dir, pt.path || "");
    if (!check(!!pt.path && fs.existsSync(p), `${file}: patch ${pt.path} exists`)) continue;
    const [doc] = readDocs(p);
    check(
      !pt.target || (doc.kind === pt.target.kind && doc.metadata?.name === pt.target.name),
      `${file}: patch ${pt.path} targets ${pt.target?.kind}/${pt.target?.name}`,
    );
  }
  return k;
}

const isSubset = (sel, labels) =>
  Object.entries(sel || {}).every(([k, v]) => labels && labels[k] === v);
const toMs = (s) => Number(s) * 1000;
// Time budgeted for a pod's removal from the Service endpoints to reach every node's proxy and
// ingress controller (typically 1-3 s; more on large or busy clusters), and the margin kept
// between the end of the drain timeout and the kubelet's SIGKILL.
const ENDPOINT_PROPAGATION_MS = 5000;
const GRACE_MARGIN_MS = 5000;

// Properties of one complete set of objects (one kustomize entry point).
function semantics(name, objs) {
  const dep = objs.find((o) => o.kind === "Deployment");
  if (!check(!!dep, `${name}: has a Deployment`)) return;
  const pod = dep.spec.template;
  const spec = pod.spec;
  const c = spec.containers.find((x) => x.name === "resattn") || spec.containers[0];
  const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
  const ports = Object.fromEntries((c.ports || []).map((p) => [p.name, p.containerPort]));
  const t = `${name}: Deployment/${dep.metadata.name}`;

  check(isSubset(dep.spec.selector.matchLabels, pod.metadata.labels), `${t} selector matches pod labels`);
  check(c.livenessProbe?.httpGet?.path === "/healthz", `${t} liveness probe on /healthz`);
  check(c.readinessProbe?.httpGet?.path === "/readyz", `${t} readiness probe on /readyz`);
  check(!!c.startupProbe?.httpGet, `${t} has an HTTP startup probe`);
  for (const pr of ["livenessProbe", "readinessProbe", "startupProbe"]) {
    const port = c[pr]?.httpGet?.port;
    check(port in ports || Object.values(ports).includes(port), `${t} ${pr} port ${port} is a container port`);
  }
  const psc = spec.securityContext || {};
  const csc = c.securityContext || {};
  check((csc.runAsNonRoot ?? psc.runAsNonRoot) === true, `${t} runAsNonRoot`);
  const uid = csc.runAsUser ?? psc.runAsUser;
  check(uid !== undefined && uid !== 0, `${t} runs as a fixed non-zero UID`, `runAsUser=${uid}`);
  check(csc.readOnlyRootFilesystem === true, `${t} read-only root filesystem`);
  check(csc.allowPrivilegeEscalation === false, `${t} allowPrivilegeEscalation false`);
  check((csc.capabilities?.drop || []).includes("ALL"), `${t} drops ALL capabilities`);
  check(csc.privileged !== true, `${t} not privileged`);
  for (const kind of ["requests", "limits"])
    for (const r of ["cpu", "memory"])
      check(!!c.resources?.[kind]?.[r], `${t} sets ${kind}.${r}`);
  // The server sizes workers x BLAS threads from the CPU limit (cgroup quota).
  check(
    c.resources?.requests?.cpu === c.resources?.limits?.cpu,
    `${t} CPU request == limit (whole cores for workers x BLAS threads)`,
  );
  // Termination without a failed request (deploy/README.md, "Rolling updates without errors"):
  // the server keeps serving for the drain delay while endpoints and load balancers catch up,
  // then drains. The image has no shell and no `sleep`, so the delay is the server's, or a
  // preStop `sleep` action (Kubernetes >= 1.30), never an exec hook.
  check(!c.lifecycle?.preStop?.exec, `${t} no exec preStop hook (the image has no shell or sleep)`);
  const delayMs =
    Number(env.RESATTN_DRAIN_DELAY_MS ?? 0) + toMs(c.lifecycle?.preStop?.sleep?.seconds ?? 0);
  const drainMs = Number(env.RESATTN_DRAIN_TIMEOUT_MS ?? 30000);
  const requestMs = Number(env.RESATTN_REQUEST_TIMEOUT_MS ?? 30000);
  const graceMs = toMs(spec.terminationGracePeriodSeconds ?? 30);
  const rp = c.readinessProbe || {};
  const probeMs = toMs(rp.periodSeconds ?? 10) * (rp.failureThreshold ?? 3);
  check(
    probeMs + ENDPOINT_PROPAGATION_MS <= delayMs,
    `${t} readiness period x failureThreshold + endpoint propagation <= drain delay`,
    `${probeMs} + ${ENDPOINT_PROPAGATION_MS} > ${delayMs} ms`,
  );
  check(
    delayMs + drainMs + GRACE_MARGIN_MS <= graceMs,
    `${t} drain delay + drain timeout + margin <= terminationGracePeriodSeconds`,
    `${delayMs} + ${drainMs} + ${GRACE_MARGIN_MS} > ${graceMs} ms`,
  );
  check(
    drainMs >= requestMs,
    `${t} drain timeout >= request timeout (an accepted request can finish)`,
    `${drainMs} < ${requestMs} ms`,
  );
  const lp = c.livenessProbe || {};
  const liveMs = toMs(lp.periodSeconds ?? 10) * (lp.failureThreshold ?? 3);
  check(
    liveMs > drainMs,
    `${t} liveness period x failureThreshold > drain timeout (a draining pod, listener closed, is not restarted)`,
    `${liveMs} <= ${drainMs} ms`,
  );
  const ru = dep.spec.strategy?.rollingUpdate || {};
  check(
    dep.spec.strategy?.type === "RollingUpdate" && ru.maxUnavailable === 0 && Number(ru.maxSurge) >= 1,
    `${t} rolling update with maxUnavailable 0, maxSurge >= 1 (ready pods never below replicas)`,
    JSON.stringify(dep.spec.strategy),
  );
  const ann = pod.metadata.annotations || {};
  check(
    ann["prometheus.io/scrape"] === "true" &&
      Number(ann["prometheus.io/port"]) === ports.http &&
      ann["prometheus.io/path"] === "/metrics",
    `${t} Prometheus scrape annotations point at the http port /metrics`,
  );
  // Every writable path the server may need is an explicit volume.
  check(
    (c.volumeMounts || []).some((m) => m.mountPath === "/tmp"),
    `${t} has a writable /tmp volume (root filesystem is read-only)`,
  );
  if (env.RESATTN_MODEL !== undefined) {
    const m = (c.volumeMounts || []).find((vm) => env.RESATTN_MODEL.startsWith(vm.mountPath + "/"));
    check(!!m, `${t} RESATTN_MODEL ${env.RESATTN_MODEL} is on a mounted volume`);
    check(m?.readOnly === true, `${t} model volume mounted read-only`);
    check(
      !!m && (spec.volumes || []).some((v) => v.name === m.name),
      `${t} model volume ${m?.name} is declared`,
    );
  }

  const svc = objs.find((o) => o.kind === "Service");
  if (check(!!svc, `${name}: has a Service`)) {
    check(isSubset(svc.spec.selector, pod.metadata.labels), `${name}: Service selector matches pods`);
    for (const p of svc.spec.ports)
      check(
        p.targetPort in ports || Object.values(ports).includes(p.targetPort),
        `${name}: Service port ${p.port} -> container port ${p.targetPort}`,
      );
  }
  const hpa = objs.find((o) => o.kind === "HorizontalPodAutoscaler");
  if (check(!!hpa, `${name}: has a HorizontalPodAutoscaler`)) {
    const ref = hpa.spec.scaleTargetRef;
    check(ref.kind === "Deployment" && ref.name === dep.metadata.name, `${name}: HPA targets the Deployment`);
    check(hpa.spec.minReplicas >= 1 && hpa.spec.minReplicas <= hpa.spec.maxReplicas, `${name}: HPA replica bounds`);
    check(
      (hpa.spec.metrics || []).some((m) => m.type === "Resource" && m.resource?.name === "cpu"),
      `${name}: HPA scales on CPU`,
    );
  }
  const pdb = objs.find((o) => o.kind === "PodDisruptionBudget");
  if (check(!!pdb, `${name}: has a PodDisruptionBudget`)) {
    check(isSubset(pdb.spec.selector.matchLabels, pod.metadata.labels), `${name}: PDB selector matches pods`);
    const minRep = Math.min(dep.spec.replicas ?? 1, hpa?.spec.minReplicas ?? Infinity);
    const { minAvailable, maxUnavailable } = pdb.spec;
    check(
      (minAvailable === undefined && maxUnavailable === 1) ||
        (typeof minAvailable === "number" && minAvailable < minRep),
      `${name}: PDB lets drains proceed (maxUnavailable 1, or minAvailable < minimum replicas)`,
      JSON.stringify(pdb.spec),
    );
  }
}

async function main() {
  const [dir, ...rendered] = process.argv.slice(2);
  if (!dir) {
    console.error("usage: node validate-k8s.mjs DIR [NAME=RENDERED.yaml ...]");
    process.exit(2);
  }
  const patchFiles = new Set();
  for (const f of yamlFiles(dir).filter((f) => path.basename(f) === "kustomization.yaml")) {
    const k = kustomizationStructure(f);
    for (const pt of k.patches || []) if (pt.path) patchFiles.add(path.resolve(path.dirname(f), pt.path));
  }
  for (const f of yamlFiles(dir)) {
    if (path.basename(f) === "kustomization.yaml") continue;
    const docs = readDocs(f);
    if (patchFiles.has(path.resolve(f))) continue; // partial objects, checked after rendering
    if (docs.every((d) => !d.apiVersion && !d.kind)) {
      check(docs.length > 0, `${f}: parses (configuration values, not a Kubernetes object)`);
      continue;
    }
    for (const d of docs) await validateSchema(d, f);
  }
  if (rendered.length === 0) {
    const base = yamlFiles(path.join(dir, "base")).filter((f) => !f.endsWith("kustomization.yaml"));
    semantics("base (raw files)", base.flatMap(readDocs));
  }
  for (const r of rendered) {
    const [name, file] = r.split("=");
    const objs = readDocs(file);
    check(objs.length > 0, `${name}: kustomize output has objects`);
    for (const o of objs) await validateSchema(o, name);
    semantics(name, objs);
  }
  finish("k8s");
}

main().catch((e) => {
  console.error(`validate-k8s: ${e.stack || e}`);
  process.exit(1);
});
