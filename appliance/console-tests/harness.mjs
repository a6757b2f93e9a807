// Shared by the console's browser scripts (e2e.mjs, siderolink.mjs): playwright-core from
// NODE_PATH driving Debian's chromium (CHROMIUM), the box under test (BASE_URL, its admin
// token from DATA_DIR), the screenshot dir (SHOTS_DIR), checks named by the step they are
// in, and the line protocol with the Rust harness that started the script: a request is
// printed as `@<who> <cmd>` on stdout and answered with `@ok [value]` or `@err <message>`
// on stdin. A script launches the browser, runs its steps in `try`, and ends with
// `fail(e)` in `catch` and `finish(browser)` in `finally` (exit code 1 on the first failed
// check or page error).

import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

const require = createRequire(join(process.env.NODE_PATH || ".", "noop.js"));
const { chromium } = require("playwright-core");

export const BASE = process.env.BASE_URL;
export const DATA_DIR = process.env.DATA_DIR;
export const SHOTS = process.env.SHOTS_DIR;
export const TOKEN = readFileSync(join(DATA_DIR, "admin.token"), "utf8").trim();
mkdirSync(SHOTS, { recursive: true });

// The step the script is in, named in a failed check (`at.step = "login"`).
export const at = { step: "start" };

export function check(cond, what) {
  if (!cond) throw new Error(`check failed at step "${at.step}": ${what}`);
  console.log(`  ok: ${what}`);
}

const harness = createInterface({ input: process.stdin });
const waiting = [];
harness.on("line", (l) => { const w = waiting.shift(); if (w) w(l); });

// A function asking the harness to act as `who` (`agent`, `node`): resolves to the value
// of its `@ok` answer, throws on anything else.
export function asker(who) {
  return async (cmd) => {
    const reply = new Promise((resolve) => waiting.push(resolve));
    console.log(`@${who} ${cmd}`);
    const line = await reply;
    if (line !== "@ok" && !line.startsWith("@ok ")) throw new Error(`${who} ${cmd} failed: ${line}`);
    return line.slice(3).trim();
  };
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
    headless: true,
  });
}

export function fail(e) {
  console.error(String(e.stack || e));
  process.exitCode = 1;
}

export async function finish(browser) {
  await browser.close();
  harness.close();
  process.exit(process.exitCode ?? 0);
}
