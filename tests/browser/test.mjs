// Browser test of the page resattn serves at "/": starts the real server with two models on
// a free loopback port, opens the page in Debian's headless Chromium (playwright-core), and
//   - checks the model picker lists both served models;
//   - uploads an example image with the first model: the top label is the one the file name
//     says, the answer names the model, every block's attention picture decoded;
//   - checks every example thumbnail decoded, picks the second model and clicks a thumbnail:
//     the answer names the second model; picks the first again, clicks another thumbnail:
//     its top label is the one that picture's name says;
//   - sends a file that is not a picture and a cut-short PNG: the page says so in plain
//     words, with the server's message as the detail, and shows no (broken) preview.
// Saves screenshots to tests/artifacts/browser*.png. Exits non-zero on any failure.
//
// Environment: RESATTN_BIN (default build/resattn), IMAGE (default the first
// models/examples/*.png), EXPECT_LABEL (default: derived from the image's file name,
// e.g. "ankle_boot.png" or "9_ankle_boot.png" -> "Ankle boot"), CHROMIUM (default
// /usr/bin/chromium), MODELS (the two models to serve, space-separated; default
// models/default.safetensors, the built-in model's file, and tests/fixtures/basic_cifar_cbam.safetensors),
// SERVE_ARGS (extra arguments for `resattn serve`).
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bin = path.resolve(root, process.env.RESATTN_BIN || "build/resattn");
const examples = path.join(root, "models/examples");
const image = process.env.IMAGE
  ? path.resolve(process.env.IMAGE)
  : path.join(examples, fs.readdirSync(examples).filter((f) => f.endsWith(".png")).sort()[0]);
const artifacts = path.join(root, "tests/artifacts");
const norm = (s) => s.toLowerCase().replace(/[^a-z0-9]/g, "");
// "9_ankle_boot.png" -> "ankleboot": drop the extension and a leading class index.
const labelOf = (file) => norm(path.basename(file, path.extname(file)).replace(/^\d+[_-]/, ""));
const expected = norm(process.env.EXPECT_LABEL || labelOf(image));
const models = (process.env.MODELS ||
                "models/default.safetensors tests/fixtures/basic_cifar_cbam.safetensors")
  .split(" ").filter(Boolean).map((m) => path.resolve(root, m));
const exampleFiles = fs.readdirSync(examples).filter((f) => f.endsWith(".png")).sort();

// The name `resattn serve` gives a model file: its config's "name", else the file stem
// (safetensors: an 8-byte little-endian header length, then the JSON header).
function modelName(file) {
  const b = fs.readFileSync(file);
  const header = JSON.parse(b.subarray(8, 8 + Number(b.readBigUInt64LE(0))).toString("utf8"));
  const config = JSON.parse(header.__metadata__?.["resattn.config"] || "{}");
  return config.name || path.basename(file, path.extname(file));
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "resattn-browser-"));
let server, context;

function fail(msg) {
  throw new Error(msg);
}

async function startServer() {
  const portFile = path.join(tmp, "port");
  const args = ["serve", "--port", "0", "--port-file", portFile, "--host", "127.0.0.1",
                ...models.flatMap((m) => ["--model", m]),
                ...(process.env.SERVE_ARGS ? process.env.SERVE_ARGS.split(" ") : [])];
  server = spawn(bin, args, { stdio: ["ignore", "inherit", "inherit"] });
  let exited = null;
  server.on("exit", (code, sig) => { exited = `${code ?? sig}`; });
  for (let i = 0; i < 300; i++) { // up to 30 s: the machine is shared and slow
    if (exited !== null) fail(`resattn serve exited early (${exited})`);
    const text = fs.existsSync(portFile) ? fs.readFileSync(portFile, "utf8").trim() : "";
    if (/^\d+$/.test(text)) return Number(text);
    await new Promise((r) => setTimeout(r, 100));
  }
  fail("resattn serve wrote no port file within 30 s");
}

async function main() {
  if (!fs.existsSync(bin)) fail(`no server binary at ${bin} (run make first)`);
  if (!fs.existsSync(image)) fail(`no test image at ${image}`);
  const port = await startServer();
  const url = `http://127.0.0.1:${port}/`;
  context = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1200, height: 1000 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // Error answers are checked through the responses below (Chromium also logs each to the
  // console as "Failed to load resource"); only the two refused files may answer >= 400.
  const refused = [];
  page.on("response", (r) => { if (r.status() >= 400) refused.push(`${r.status()} ${r.url()}`); });
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource"))
      problems.push(`console: ${m.text()}`);
  });
  // No external assets: every request the page makes goes to our server.
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(url) && !u.startsWith("data:") && !u.startsWith("blob:"))
      problems.push(`external request: ${u}`);
  });

  const res = await page.goto(url);
  if (!res || res.status() !== 200) fail(`GET / answered ${res && res.status()}`);
  if (!/html/.test(res.headers()["content-type"] || ""))
    fail(`GET / content-type ${res.headers()["content-type"]}`);
  // The model picker lists every served model, in --model order.
  const names = models.map(modelName);
  await page.waitForFunction((n) => document.querySelectorAll("#model option").length === n,
                             names.length, { timeout: 10000 });
  const listed = await page.$$eval("#model option", (els) => els.map((e) => e.value));
  if (listed.join(",") !== names.join(","))
    fail(`model picker lists ${listed.join(", ")}, expected ${names.join(", ")}`);

  // An uploaded picture, with the first model.
  await page.selectOption("#model", names[0]);
  let answer = await send(page, () => page.setInputFiles("#file", image));
  if (answer.error) fail(`upload of ${path.basename(image)}: ${answer.status}`);
  if (answer.by !== names[0]) fail(`answered by "${answer.by}", expected "${names[0]}"`);
  const labels = answer.labels;
  if (labels.length !== 5) fail(`expected 5 labels, got ${labels.length} (status: ${answer.status})`);
  if (!sameLabel(labels[0], expected))
    fail(`top label "${labels[0]}", expected "${expected}" (all: ${labels.join(", ")})`);
  const shown = await blockPictures(page);
  fs.mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, "browser.png"), fullPage: true });

  // The example thumbnails: one per models/examples/*.png, each decoded.
  const thumbs = await page.$$eval("#examples button", (els) => els.map((b) => {
    const i = b.querySelector("img");
    return { name: b.dataset.name, w: i.naturalWidth, h: i.naturalHeight };
  }));
  if (thumbs.map((t) => t.name).join(",") !== exampleFiles.join(","))
    fail(`thumbnails ${thumbs.map((t) => t.name).join(", ")}, expected ${exampleFiles.join(", ")}`);
  const undecoded = thumbs.filter((t) => !(t.w > 0 && t.h > 0));
  if (undecoded.length) fail(`thumbnails that did not decode: ${undecoded.map((t) => t.name).join(", ")}`);

  // The second model through a thumbnail: the answer names it.
  const other = exampleFiles.find((f) => labelOf(f) !== expected) || exampleFiles[0];
  const clickThumb = (name) => page.click(`#examples button[data-name="${name}"]`);
  if (names.length > 1) {
    await page.selectOption("#model", names[1]);
    answer = await send(page, () => clickThumb(other));
    if (answer.error) fail(`thumbnail ${other} with ${names[1]}: ${answer.status}`);
    if (answer.by !== names[1]) fail(`answered by "${answer.by}", expected "${names[1]}"`);
    if (answer.labels.length === 0) fail(`no labels from ${names[1]}`);
    await blockPictures(page);
    await page.screenshot({ path: path.join(artifacts, "browser-model2.png"), fullPage: true });
  }
  // Back to the first model, another thumbnail: its own label.
  await page.selectOption("#model", names[0]);
  answer = await send(page, () => clickThumb(other));
  if (answer.error) fail(`thumbnail ${other}: ${answer.status}`);
  if (answer.by !== names[0]) fail(`answered by "${answer.by}", expected "${names[0]}"`);
  if (!sameLabel(answer.labels[0], labelOf(other)))
    fail(`thumbnail ${other}: top label "${answer.labels[0]}", expected "${labelOf(other)}"`);

  // Files the server refuses: plain words, the server's message as the detail, no preview.
  const cut = fs.readFileSync(image).subarray(0, 60);
  const bad = [
    { file: { name: "notes.png", mimeType: "image/png", buffer: Buffer.from("this is not a picture\n") },
      words: "not a picture the server can read", detail: "unsupported image format" },
    { file: { name: "cut-short.png", mimeType: "image/png", buffer: cut },
      words: "could not be read", detail: "" },
  ];
  for (const b of bad) {
    answer = await send(page, () => page.setInputFiles("#file", b.file));
    if (!answer.error) fail(`${b.file.name}: no error shown (status: "${answer.status}")`);
    if (!answer.status.includes(b.words) || /[{}"]|HTTP \d/.test(answer.status))
      fail(`${b.file.name}: status "${answer.status}" is not the plain message "${b.words}"`);
    if (!answer.detail || (b.detail && !answer.detail.includes(b.detail)))
      fail(`${b.file.name}: detail "${answer.detail}", expected the server's message`);
    if (answer.labels.length || answer.by) fail(`${b.file.name}: labels or a model shown with the error`);
    await page.waitForTimeout(300); // a preview that would appear late
    const broken = await page.$$eval("img", (els) => els
      .filter((i) => i.offsetParent !== null && !(i.complete && i.naturalWidth > 0))
      .map((i) => i.id || i.alt || i.src.slice(0, 40)));
    if (broken.length) fail(`${b.file.name}: broken pictures shown: ${broken.join(", ")}`);
    if (await page.isVisible("#preview")) fail(`${b.file.name}: a preview is shown with the error`);
  }
  await page.screenshot({ path: path.join(artifacts, "browser-error.png"), fullPage: true });

  const wantRefused = [`415 ${url}predict/${names[0]}?attention=images`,
                       `422 ${url}predict/${names[0]}?attention=images`];
  if (refused.join("\n") !== wantRefused.join("\n"))
    problems.push(`error answers:\n  ${refused.join("\n  ")}\nexpected:\n  ${wantRefused.join("\n  ")}`);
  if (problems.length) fail(problems.join("\n"));
  console.log(`ok: models ${names.join(", ")}; ${path.basename(image)} -> ${labels[0]}; ` +
              `${shown.blocks} blocks, ${shown.pictures} pictures (${shown.heatmaps} heatmaps); ` +
              `${thumbs.length} thumbnails; ${other} via ${names.length > 1 ? names[1] + " and " : ""}` +
              `${names[0]}; plain errors for ${bad.map((b) => b.file.name).join(", ")}; ` +
              `screenshots tests/artifacts/browser*.png`);
}

const sameLabel = (a, want) => {
  const n = norm(a || "");
  return n === want || n.startsWith(want) || want.startsWith(n);
};

// Do `action` (an upload or a click), wait for the page's answer to it: labels or an error.
async function send(page, action) {
  await page.evaluate(() => {
    for (const id of ["status", "answered-by"]) document.getElementById(id).textContent = "";
  });
  await action();
  await page.waitForFunction(() => {
    const s = document.querySelector("#status");
    return s.textContent !== "" && !s.textContent.startsWith("classifying");
  }, null, { timeout: 60000 });
  return page.evaluate(() => ({
    status: document.querySelector("#status").textContent,
    error: document.querySelector("#status").classList.contains("error"),
    detail: document.querySelector("#detail").textContent,
    by: document.querySelector("#answer").hidden ? "" : document.querySelector("#answered-by").textContent,
    labels: [...document.querySelectorAll("#labels li .name")].map((e) => e.textContent),
  }));
}

// Every block's pictures have loaded and decoded, and every block has one.
async function blockPictures(page) {
  await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll("#blocks img")];
    return imgs.length > 0 && imgs.every((i) => i.complete);
  }, null, { timeout: 30000 });
  const imgs = await page.$$eval("#blocks img", (els) =>
    els.map((i) => ({ alt: i.alt, cls: i.className, w: i.naturalWidth, h: i.naturalHeight })));
  const blocks = await page.$$eval("#blocks .block h3", (els) => els.map((e) => e.textContent));
  const broken = imgs.filter((i) => !(i.w > 0 && i.h > 0));
  if (broken.length) fail(`pictures that did not decode: ${broken.map((i) => i.alt).join(", ")}`);
  if (blocks.length === 0) fail("no attention blocks shown");
  const withPicture = new Set(imgs.map((i) => i.alt.split(" ")[0]));
  const missing = blocks.filter((b) => !withPicture.has(b));
  if (missing.length) fail(`blocks without a picture: ${missing.join(", ")}`);
  return { blocks: blocks.length, pictures: imgs.length,
           heatmaps: imgs.filter((i) => i.cls === "heatmap").length };
}

let code = 0;
try {
  await main();
} catch (e) {
  console.error(`browser test FAILED: ${e.message}`);
  code = 1;
} finally {
  if (context) await context.close().catch(() => {});
  if (server && server.exitCode === null) {
    server.kill("SIGTERM");
    await new Promise((r) => { server.on("exit", r); setTimeout(r, 5000); });
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.exit(code);
