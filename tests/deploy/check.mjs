// The validators' one reporting convention: a line per check ("ok   what" or "FAIL what:
// detail"), then "NAME: N passed, N failed" and exit status 1 on any failure.
let passed = 0;
let failed = 0;

export function check(ok, what, detail = "") {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${!ok && detail ? `: ${detail}` : ""}`);
  return ok;
}

export function finish(name) {
  console.log(`${name}: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
