// Offline validation of deploy/kserve against a subset of KServe's CRDs, written by hand from
// KServe v0.14's API types (pkg/apis/serving/v1alpha1/servingruntime_types.go; v1beta1
// inference_service.go, predictor.go, predictor_model.go, component.go): every field of the
// objects down to the containers is declared with its type, required fields are required and
// unknown fields are rejected (the API server prunes them silently, so a typo such as
// `protocolVersion:` in a ServingRuntime would otherwise pass unnoticed). Containers and
// volumes are checked against the Kubernetes schemas (kubernetes-models, as a Pod), and their
// field names against core/v1 Container's. Then the properties the two files promise together:
// the InferenceService names the runtime, a format it supports and a protocol it speaks; the
// runtime's container is `kserve-container`, reads /mnt/models under the InferenceService's
// name ({{.Name}}), listens on the one declared port, probes readiness, runs non-root.
//
//   node validate-kserve.mjs DIR        (DIR = deploy/kserve)
// Prints one line per check and "kserve: N passed, N failed"; exits 1 on any failure.
import fs from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { Pod } from "kubernetes-models/v1";

import { check, finish } from "./check.mjs";

// ---- the schema language: just enough for the CRD subset ---------------------------------
const str = { type: "string" };
const bool = { type: "boolean" };
const int = (minimum, maximum) => ({ type: "integer", minimum, maximum });
const strMap = { type: "map", values: str };
const any = { type: "any" }; // checked elsewhere (Kubernetes schemas) or opaque here
const arr = (items, minItems = 0) => ({ type: "array", items, minItems });
const obj = (properties, required = []) => ({ type: "object", properties, required });
const oneOf = (...values) => ({ type: "string", enum: values });

// corev1.Container's fields (Kubernetes 1.27-1.30); values are checked by kubernetes-models.
const CONTAINER_FIELDS = [
  "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
  "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe",
  "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
  "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty",
];
const container = obj(Object.fromEntries(CONTAINER_FIELDS.map((f) => [f, any])), ["name"]);
// corev1.PodSpec's fields, inlined into the v1beta1 component specs.
const POD_FIELDS = [
  "volumes", "initContainers", "containers", "ephemeralContainers", "restartPolicy",
  "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector",
  "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "nodeName",
  "hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace", "securityContext",
  "imagePullSecrets", "hostname", "subdomain", "affinity", "schedulerName", "tolerations",
  "hostAliases", "priorityClassName", "priority", "dnsConfig", "readinessGates",
  "runtimeClassName", "enableServiceLinks", "preemptionPolicy", "overhead",
  "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates",
  "resourceClaims",
];
const PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"];
const metadata = obj({ name: str, namespace: str, labels: strMap, annotations: strMap }, ["name"]);

// v1alpha1 ServingRuntimeSpec (ServingRuntimePodSpec inlined; ModelMesh fields included).
const servingRuntimePodSpec = {
  containers: arr(container, 1),
  volumes: arr(any),
  nodeSelector: strMap,
  affinity: any,
  tolerations: arr(any),
  labels: strMap,
  annotations: strMap,
  imagePullSecrets: arr(obj({ name: str })),
  hostIPC: bool,
};
const servingRuntime = obj(
  {
    apiVersion: oneOf("serving.kserve.io/v1alpha1"),
    kind: oneOf("ServingRuntime", "ClusterServingRuntime"),
    metadata,
    spec: obj(
      {
        supportedModelFormats: arr(
          obj({ name: str, version: str, autoSelect: bool, priority: int(1) }, ["name"]),
        ),
        multiModel: bool,
        disabled: bool,
        protocolVersions: arr(oneOf(...PROTOCOLS)),
        workerSpec: obj({
          ...servingRuntimePodSpec,
          pipelineParallelSize: int(1),
          tensorParallelSize: int(1),
        }),
        ...servingRuntimePodSpec,
        grpcEndpoint: str,
        grpcDataEndpoint: str,
        httpDataEndpoint: str,
        replicas: int(0, 65535),
        storageHelper: obj({ disabled: bool }),
        builtInAdapter: obj({
          serverType: str,
          runtimeManagementPort: int(0),
          memBufferBytes: int(0),
          modelLoadingTimeoutMillis: int(0),
          env: arr(any),
        }),
      },
      ["containers"],
    ),
  },
  ["apiVersion", "kind", "metadata", "spec"],
);

// v1beta1 ModelSpec = modelFormat + runtime + PredictorExtensionSpec (a Container inlined).
const extension = {
  storageUri: { type: "string", pattern: /^(gs|s3|pvc|file|https?|hdfs|webhdfs|oci|hf):\/\/./ },
  runtimeVersion: str,
  protocolVersion: oneOf(...PROTOCOLS),
  storage: obj({ path: str, schemaPath: str, parameters: strMap, key: str }),
  ...container.properties,
};
const modelSpec = obj(
  { modelFormat: obj({ name: str, version: str }, ["name"]), runtime: str, ...extension },
  ["modelFormat"],
);
const FRAMEWORKS = ["sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx",
  "huggingface", "pmml", "lightgbm", "paddle"];
const componentExtension = {
  minReplicas: int(0),
  maxReplicas: int(0),
  scaleTarget: int(1),
  scaleMetric: oneOf("cpu", "memory", "concurrency", "rps"),
  containerConcurrency: int(0),
  timeout: int(1),
  canaryTrafficPercent: int(0, 100),
  logger: obj({ url: str, mode: oneOf("all", "request", "response") }),
  batcher: obj({ maxBatchSize: int(1), maxLatency: int(1), timeout: int(1) }),
  labels: strMap,
  annotations: strMap,
  deploymentStrategy: any,
};
const predictor = obj({
  ...Object.fromEntries(FRAMEWORKS.map((f) => [f, any])),
  model: modelSpec,
  storageUris: arr(obj({ uri: str, mountPath: str }, ["uri"]), 1),
  workerSpec: any,
  ...Object.fromEntries(POD_FIELDS.map((f) => [f, any])),
  containers: arr(container),
  ...componentExtension,
});
const inferenceService = obj(
  {
    apiVersion: oneOf("serving.kserve.io/v1beta1"),
    kind: oneOf("InferenceService"),
    metadata: {
      ...metadata,
      // KServe's name rule (a DNS-1035 label: it becomes a Service and a host name)
      properties: { ...metadata.properties, name: { type: "string", pattern: /^[a-z]([-a-z0-9]*[a-z0-9])?$/ } },
    },
    spec: obj({ predictor, explainer: any, transformer: any }, ["predictor"]),
  },
  ["apiVersion", "kind", "metadata", "spec"],
);

// Errors of value v against schema s at path p (an array of strings; empty = valid).
function validate(v, s, p = "") {
  const errs = [];
  const type = Array.isArray(v) ? "array" : v === null ? "null" : typeof v;
  switch (s.type) {
    case "any":
      break;
    case "string":
      if (type !== "string") errs.push(`${p}: ${type}, not a string`);
      else if (s.enum && !s.enum.includes(v)) errs.push(`${p}: '${v}' is not one of ${s.enum.join(", ")}`);
      else if (s.pattern && !s.pattern.test(v)) errs.push(`${p}: '${v}' does not match ${s.pattern}`);
      break;
    case "boolean":
      if (type !== "boolean") errs.push(`${p}: ${type}, not a boolean`);
      break;
    case "integer":
      if (!Number.isInteger(v)) errs.push(`${p}: ${JSON.stringify(v)} is not an integer`);
      else if ((s.minimum !== undefined && v < s.minimum) || (s.maximum !== undefined && v > s.maximum))
        errs.push(`${p}: ${v} outside [${s.minimum ?? ""}, ${s.maximum ?? ""}]`);
      break;
    case "map":
      if (type !== "object") errs.push(`${p}: ${type}, not a map`);
      else for (const [k, x] of Object.entries(v)) errs.push(...validate(x, s.values, `${p}.${k}`));
      break;
    case "array":
      if (type !== "array") errs.push(`${p}: ${type}, not a list`);
      else {
        if (v.length < s.minItems) errs.push(`${p}: fewer than ${s.minItems} items`);
        v.forEach((x, i) => errs.push(...validate(x, s.items, `${p}[${i}]`)));
      }
      break;
    case "object":
      if (type !== "object") {
        errs.push(`${p}: ${type}, not an object`);
        break;
      }
      for (const r of s.required) if (!(r in v)) errs.push(`${p}.${r}: required`);
      for (const [k, x] of Object.entries(v)) {
        if (!(k in s.properties)) errs.push(`${p}.${k}: unknown field`);
        else errs.push(...validate(x, s.properties[k], `${p}.${k}`));
      }
      break;
    default:
      throw new Error(`bad schema at ${p}`);
  }
  return errs;
}

function schemaCheck(o, schema, where) {
  const errs = validate(o, schema, o.kind || "?");
  check(errs.length === 0, `${where}: ${o.kind}/${o.metadata?.name} matches the KServe v0.14 schema subset`, errs.join("; "));
}

// Containers and volumes against the Kubernetes schemas (types, enums, required fields).
function k8sContainers(containers, volumes, where) {
  try {
    new Pod({ metadata: { name: "check" }, spec: { containers, volumes } }).validate();
    check(true, `${where}: containers are valid Kubernetes containers`);
  } catch (e) {
    check(false, `${where}: containers are valid Kubernetes containers`, e.message);
  }
}

// The schema must reject what it claims to: a few broken copies must fail (the checker checked).
function selfTest(sr, isvc) {
  const clone = (x) => JSON.parse(JSON.stringify(x));
  const cases = [
    [servingRuntime, (o) => (o.spec.protocolVersion = ["v2"]), "an unknown spec field"],
    [servingRuntime, (o) => (o.spec.protocolVersions = ["v3"]), "a protocol KServe does not know"],
    [servingRuntime, (o) => delete o.spec.containers, "no containers"],
    [servingRuntime, (o) => (o.spec.supportedModelFormats[0].autoSelect = "yes"), "a string for a boolean"],
    [servingRuntime, (o) => (o.spec.containers[0].arg = []), "an unknown container field"],
    [inferenceService, (o) => delete o.spec.predictor.model.modelFormat, "a model without modelFormat"],
    [inferenceService, (o) => (o.spec.predictor.model.storageURI = "s3://x/y"), "storageURI (wrong case)"],
    [inferenceService, (o) => (o.spec.predictor.model.storageUri = "ftp://x/y"), "an unsupported storage scheme"],
    [inferenceService, (o) => (o.metadata.name = "Fashion_1"), "a name that is not a DNS-1035 label"],
    [inferenceService, (o) => (o.spec.predictor.minReplicas = -1), "negative minReplicas"],
  ];
  for (const [schema, mutate, what] of cases) {
    const o = clone(schema === servingRuntime ? sr : isvc);
    mutate(o);
    check(validate(o, schema).length > 0, `schema rejects ${what}`);
  }
}

function semantics(sr, isvc) {
  const c = sr.spec.containers.find((x) => x.name === "kserve-container");
  if (!check(!!c, "ServingRuntime: the model server container is named kserve-container (gets /mnt/models)")) return;
  const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
  const m = isvc.spec.predictor.model;
  const t = `InferenceService/${isvc.metadata.name}`;
  check(m.runtime === sr.metadata.name, `${t} runs on ServingRuntime/${sr.metadata.name}`, m.runtime);
  check(
    (sr.spec.supportedModelFormats || []).some(
      (f) => f.name === m.modelFormat.name && (!m.modelFormat.version || f.version === m.modelFormat.version),
    ),
    `${t} model format ${m.modelFormat.name} is one the runtime supports`,
  );
  check((sr.spec.protocolVersions || []).includes(m.protocolVersion ?? "v1"), `${t} protocol ${m.protocolVersion} is one the runtime speaks`);
  check((sr.spec.protocolVersions || []).includes("v2"), "ServingRuntime speaks the Open Inference Protocol v2");
  check(sr.spec.multiModel !== true, "ServingRuntime is single-model (no ModelMesh adapter)");
  check(!!m.storageUri, `${t} has a storageUri (copied to /mnt/models)`);
  const args = c.args || [];
  const mi = args.indexOf("--model");
  const marg = mi >= 0 ? args[mi + 1] : env.RESATTN_MODEL;
  check(
    marg === "{{.Name}}=/mnt/models",
    "ServingRuntime: --model {{.Name}}=/mnt/models (served under the InferenceService's name, from the storage initializer's directory)",
    String(marg),
  );
  const ports = c.ports || [];
  check(ports.length === 1, "ServingRuntime: exactly one container port (Knative routes to one)", JSON.stringify(ports));
  const port = ports[0]?.containerPort;
  check(Number(env.RESATTN_PORT ?? 8080) === port, `ServingRuntime: the server listens on the container port ${port}`);
  check(env.RESATTN_HOST === undefined || env.RESATTN_HOST === "0.0.0.0", "ServingRuntime: the server listens on all addresses");
  const rp = c.readinessProbe?.httpGet;
  check(
    !!rp && ["/v2/health/ready", "/readyz"].includes(rp.path) && (rp.port === undefined || rp.port === port),
    "ServingRuntime: readiness probe on /v2/health/ready at the container port",
  );
  const sc = c.securityContext || {};
  check(sc.runAsNonRoot === true && sc.runAsUser > 0, "ServingRuntime: runs as a fixed non-root UID");
  check(sc.readOnlyRootFilesystem === true && sc.allowPrivilegeEscalation === false, "ServingRuntime: read-only root, no privilege escalation");
  check((sc.capabilities?.drop || []).includes("ALL"), "ServingRuntime: drops ALL capabilities");
  check(
    !!c.resources?.limits?.cpu && c.resources?.requests?.cpu === c.resources?.limits?.cpu && !!c.resources?.limits?.memory,
    "ServingRuntime: CPU request == limit (whole cores) and a memory limit",
  );
  const p = isvc.spec.predictor;
  check(p.maxReplicas === undefined || p.maxReplicas === 0 || (p.minReplicas ?? 1) <= p.maxReplicas, `${t} minReplicas <= maxReplicas`);
  check(!c.lifecycle?.preStop?.exec, "ServingRuntime: no exec preStop hook (the image has no shell); the drain delay is the server's");
  check(Number(env.RESATTN_DRAIN_DELAY_MS ?? 0) > 0, "ServingRuntime: RESATTN_DRAIN_DELAY_MS > 0 (routing learns of a terminating pod late)");
}

function main() {
  const dir = process.argv[2];
  if (!dir) {
    console.error("usage: node validate-kserve.mjs DIR");
    process.exit(2);
  }
  const objs = [];
  for (const f of fs.readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)).sort()) {
    const file = path.join(dir, f);
    for (const d of parseAllDocuments(fs.readFileSync(file, "utf8"))) {
      if (!check(d.errors.length === 0, `${file}: parses`, d.errors[0]?.message)) continue;
      const o = d.toJS();
      if (o) objs.push([file, o]);
    }
  }
  const [srFile, sr] = objs.find(([, o]) => o.kind === "ServingRuntime") || [];
  const [isFile, isvc] = objs.find(([, o]) => o.kind === "InferenceService") || [];
  if (!check(!!sr && !!isvc, `${dir}: has a ServingRuntime and an InferenceService`)) return finish("kserve");
  for (const [file, o] of objs)
    if (o.kind !== "ServingRuntime" && o.kind !== "InferenceService") check(false, `${file}: unexpected kind ${o.kind}`);
  schemaCheck(sr, servingRuntime, srFile);
  schemaCheck(isvc, inferenceService, isFile);
  k8sContainers(sr.spec.containers, sr.spec.volumes, srFile);
  selfTest(sr, isvc);
  semantics(sr, isvc);
  finish("kserve");
}

main();
