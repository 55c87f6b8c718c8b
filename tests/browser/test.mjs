// Browser test of the page resattn serves at "/": starts the real server on a free
// loopback port, opens the page in Debian's headless Chromium (playwright-core), uploads
// an example image, waits for the top-5 labels and the per-block attention pictures, and
// checks that the top label is the one the file name says and that every picture decoded.
// Saves a screenshot to tests/artifacts/browser.png. Exits non-zero on any failure.
//
// Environment: RESATTN_BIN (default build/resattn), IMAGE (default the first
// models/examples/*.png), EXPECT_LABEL (default: derived from the image's file name,
// e.g. "ankle_boot.png" or "9_ankle_boot.png" -> "Ankle boot"), CHROMIUM (default
// /usr/bin/chromium), SERVE_ARGS (extra arguments for `resattn serve`).
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
const expected = norm(process.env.EXPECT_LABEL ||
                      path.basename(image, path.extname(image)).replace(/^\d+[_-]/, ""));

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "resattn-browser-"));
let server, context;

function fail(msg) {
  throw new Error(msg);
}

async function startServer() {
  const portFile = path.join(tmp, "port");
  const args = ["serve", "--port", "0", "--port-file", portFile, "--host", "127.0.0.1",
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
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
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
  await page.setInputFiles("#file", image);

  // Wait for the answer: five labels (or an error in #status).
  await page.waitForFunction(
    () => document.querySelectorAll("#labels li").length > 0 ||
          document.querySelector("#status").classList.contains("error"),
    null, { timeout: 60000 });
  const status = await page.textContent("#status");
  const labels = await page.$$eval("#labels li .name", (els) => els.map((e) => e.textContent));
  if (labels.length !== 5) fail(`expected 5 labels, got ${labels.length} (status: ${status})`);
  if (norm(labels[0]) !== expected && !norm(labels[0]).startsWith(expected) &&
      !expected.startsWith(norm(labels[0])))
    fail(`top label "${labels[0]}", expected "${expected}" (all: ${labels.join(", ")})`);

  // Every block's pictures have loaded and decoded.
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

  fs.mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: path.join(artifacts, "browser.png"), fullPage: true });
  if (problems.length) fail(problems.join("\n"));
  console.log(`ok: ${path.basename(image)} -> ${labels[0]}; ${blocks.length} blocks, ` +
              `${imgs.length} pictures (${imgs.filter((i) => i.cls === "heatmap").length} ` +
              `heatmaps); screenshot tests/artifacts/browser.png`);
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
