#!/usr/bin/env node
// Loopline end-to-end browser journey: first-run setup -> dashboard -> logout
// -> failed login -> login -> reload -> outbox preview -> test send -> captured mail.
//
// Drives the system (Debian) Chromium headless through playwright-core.
// Exit codes: 0 = all steps passed, 1 = a step failed, 2 = bad configuration
// or the browser could not be launched.
//
// Environment:
//   BASE_URL        required, e.g. http://127.0.0.1:41234
//   CHROMIUM        path to the browser binary (default /usr/bin/chromium)
//   SCREENSHOT_DIR  optional; if set, a PNG is saved after every step (and on failure)
//   OWNER_EMAIL     owner account e-mail (default owner@example.test)
//   OWNER_PASSWORD  owner account password (default a fixed long test password)
//
// Usage: cd tests/browser && npm ci && BASE_URL=http://127.0.0.1:41234 node journey.mjs

import { chromium } from "playwright-core";
import { mkdir } from "node:fs/promises";
import path from "node:path";

const STEP_TIMEOUT_MS = 10_000;

const BASE_URL = (process.env.BASE_URL || "").replace(/\/+$/, "");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || "";
const OWNER_EMAIL = process.env.OWNER_EMAIL || "owner@example.test";
const OWNER_PASSWORD = process.env.OWNER_PASSWORD || "correct-horse-battery-staple-42";
const WRONG_PASSWORD = OWNER_PASSWORD + "-definitely-wrong";

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

class StepFailure extends Error {}

function fail(message) {
  throw new StepFailure(message);
}

function configError(message) {
  console.error(`config error: ${message}`);
  process.exit(2);
}

if (!BASE_URL) configError("BASE_URL is not set (e.g. BASE_URL=http://127.0.0.1:41234)");
try {
  new URL(BASE_URL);
} catch {
  configError(`BASE_URL is not a valid URL: ${JSON.stringify(BASE_URL)}`);
}

let page;
let stepNo = 0;
let stepDeadline = 0;

// Time left in the current step's budget, so that inner waits fail with a
// specific message before the step's hard timeout fires.
function left() {
  return Math.max(250, stepDeadline - Date.now() - 300);
}

function stripAnsi(s) {
  return String(s).replace(/\u001b\[[0-9;]*m/g, "");
}

function currentPath() {
  return new URL(page.url()).pathname;
}

function slug(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 60);
}

async function screenshot(label) {
  if (!SCREENSHOT_DIR || !page) return;
  const file = path.join(SCREENSHOT_DIR, `${String(stepNo).padStart(2, "0")}-${slug(label)}.png`);
  try {
    await page.screenshot({ path: file, fullPage: true, timeout: STEP_TIMEOUT_MS });
  } catch (e) {
    console.error(`# warning: could not save screenshot ${file}: ${e.message}`);
  }
}

// Run one step with a hard timeout; print "ok - name" on success.
async function step(name, fn) {
  stepNo += 1;
  stepDeadline = Date.now() + STEP_TIMEOUT_MS;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new StepFailure(`timed out after ${STEP_TIMEOUT_MS / 1000}s`)),
      STEP_TIMEOUT_MS,
    );
  });
  const work = fn();
  work.catch(() => {}); // a step that loses the race must not become an unhandled rejection
  try {
    await Promise.race([work, timeout]);
  } catch (e) {
    if (e && typeof e === "object") e.reported = true;
    const url = page ? page.url() : "(no page)";
    const msg = stripAnsi(e instanceof StepFailure ? e.message : (e && e.message) || String(e));
    console.log(`not ok - ${name}`);
    console.error(`FAILED step ${stepNo} "${name}": ${msg.split("\n")[0]}`);
    console.error(`  current URL: ${url}`);
    if (!(e instanceof StepFailure) && msg.includes("\n")) {
      console.error(msg.split("\n").slice(1, 8).filter((l) => l.trim()).map((l) => `  ${l}`).join("\n"));
    }
    await screenshot(`FAILED-${name}`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
  console.log(`ok - ${name}`);
  await screenshot(name);
}

// Polls briefly: after an htmx-boosted swap the URL is pushed just after the DOM changes.
async function expectPath(expected) {
  try {
    await page.waitForURL((u) => u.pathname === expected, { timeout: Math.min(left(), 3000), waitUntil: "commit" });
  } catch {
    const errs = await visibleErrors();
    fail(
      `expected URL path ${expected}, got ${currentPath()} (${page.url()})` +
        (errs.length ? `; errors shown on page: ${errs.join(" | ")}` : ""),
    );
  }
}

async function visibleErrors() {
  const texts = await page
    .locator(".flash-error:visible, .form .error:visible")
    .allTextContents()
    .catch(() => []);
  return texts.map((t) => t.trim().replace(/\s+/g, " ")).filter(Boolean);
}

async function expectVisible(selector, what = selector) {
  try {
    await page.locator(selector).first().waitFor({ state: "visible", timeout: left() });
  } catch {
    const count = await page.locator(selector).count().catch(() => 0);
    const errs = await visibleErrors();
    fail(
      `${what} is not visible (selector ${selector}, ${count} matching element(s)) ` +
        `at path ${currentPath()}` +
        (errs.length ? `; errors shown on page: ${errs.join(" | ")}` : ""),
    );
  }
}

async function expectCurrentUser() {
  await expectVisible("#current-user");
  const text = ((await page.locator("#current-user").first().textContent()) || "").trim();
  if (!text.includes(OWNER_EMAIL)) {
    fail(`#current-user should contain ${JSON.stringify(OWNER_EMAIL)}, got ${JSON.stringify(text)}`);
  }
}

async function fillField(selector, value) {
  try {
    await page.locator(selector).first().fill(value, { timeout: left() });
  } catch {
    const count = await page.locator(selector).count().catch(() => 0);
    fail(`could not fill ${selector} (${count} matching element(s)) at path ${currentPath()}`);
  }
}

// Click a submit button and wait until the page has been replaced: either a
// full navigation (new document) or an htmx-boosted swap (the form is removed
// from the DOM). The button's form is tagged first; the wait ends when that tag
// is gone. A plain "framenavigated" wait is not enough because htmx's
// history.replaceState fires it before the swap.
let submitCounter = 0;
async function submitAndWait(buttonSelector) {
  const button = page.locator(buttonSelector).first();
  try {
    await button.waitFor({ state: "visible", timeout: left() });
  } catch {
    fail(`submit button ${buttonSelector} is not visible on ${page.url()}`);
  }
  const marker = `submit-${++submitCounter}`;
  await button.evaluate((el, m) => (el.form || el).setAttribute("data-journey-submit", m), marker);
  await button.click({ timeout: left() });
  try {
    await page.locator(`[data-journey-submit="${marker}"]`).waitFor({ state: "detached", timeout: left() });
  } catch {
    fail(`the page did not change after clicking ${buttonSelector} (still at ${page.url()})`);
  }
  try {
    await page.waitForLoadState("load", { timeout: left() });
  } catch {
    fail(`page did not finish loading after clicking ${buttonSelector} (at ${page.url()})`);
  }
}

async function main() {
  if (SCREENSHOT_DIR) await mkdir(SCREENSHOT_DIR, { recursive: true });

  let browser;
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30_000,
    });
  } catch (e) {
    console.error(`could not launch Chromium at ${CHROMIUM}: ${(e.message || String(e)).split("\n")[0]}`);
    return 2;
  }

  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    // Diagnostics only: these never fail the journey by themselves.
    page.on("pageerror", (err) => console.error(`# page JS error: ${err.message}`));
    page.on("response", (res) => {
      if (res.status() >= 500) console.error(`# HTTP ${res.status()} for ${res.request().method()} ${res.url()}`);
    });
    page.on("requestfailed", (req) =>
      console.error(`# request failed: ${req.method()} ${req.url()} (${req.failure()?.errorText})`),
    );

    console.log(`# BASE_URL=${BASE_URL} CHROMIUM=${CHROMIUM} (browser ${browser.version()})`);

    // a. Fresh app redirects to /setup.
    await step("setup page shown for a fresh install", async () => {
      const res = await page.goto(BASE_URL + "/", { waitUntil: "load", timeout: left() });
      if (!res) fail("no response for GET /");
      if (res.status() >= 400) fail(`GET / ended with HTTP ${res.status()} at ${page.url()}`);
      await expectPath("/setup");
      await expectVisible("form#setup-form", "setup form");
    });

    // b. Create the owner account.
    await step("owner account created via setup form", async () => {
      await fillField("#setup-form input[name=email]", OWNER_EMAIL);
      await fillField("#setup-form input[name=password]", OWNER_PASSWORD);
      await fillField("#setup-form input[name=password_confirm]", OWNER_PASSWORD);
      await submitAndWait("#setup-form button[type=submit]");
      try {
        await page.waitForURL((u) => u.pathname !== "/setup", { timeout: Math.min(left(), 3000), waitUntil: "commit" });
      } catch {
        const errs = await visibleErrors();
        fail(`still on /setup after submitting${errs.length ? `; errors shown on page: ${errs.join(" | ")}` : ""}`);
      }
    });

    // c. Dashboard after setup.
    await step("dashboard shown after setup", async () => {
      await expectVisible('[data-page="dashboard"]', "dashboard");
      await expectCurrentUser();
    });

    // d. Log out.
    await step("logout leads to login page", async () => {
      await submitAndWait("#logout-form button[type=submit]");
      await expectPath("/login");
      await expectVisible("form#login-form", "login form");
    });

    // e. Wrong password is rejected.
    await step("wrong password rejected", async () => {
      await fillField("#login-form input[name=email]", OWNER_EMAIL);
      await fillField("#login-form input[name=password]", WRONG_PASSWORD);
      await submitAndWait("#login-form button[type=submit]");
      await expectPath("/login");
      await expectVisible(".flash-error", "error flash");
      if ((await page.locator('[data-page="dashboard"]').count()) > 0) {
        fail("dashboard content is present after a failed login");
      }
    });

    // f. Correct login.
    await step("login with correct password shows dashboard", async () => {
      await fillField("#login-form input[name=email]", OWNER_EMAIL);
      await fillField("#login-form input[name=password]", OWNER_PASSWORD);
      await submitAndWait("#login-form button[type=submit]");
      await expectVisible('[data-page="dashboard"]', "dashboard");
      await expectCurrentUser();
    });

    // g. Session cookie survives a reload.
    await step("session persists across reload", async () => {
      const before = currentPath();
      const res = await page.reload({ waitUntil: "load", timeout: left() });
      if (res && res.status() >= 400) fail(`reload ended with HTTP ${res.status()}`);
      if (currentPath() !== before) fail(`reload moved from ${before} to ${currentPath()}`);
      await expectVisible('[data-page="dashboard"]', "dashboard");
      await expectCurrentUser();
    });

    // h. The Outbox says mail is captured locally (no SMTP configured).
    await step("outbox shows local capture mode", async () => {
      const res = await page.goto(BASE_URL + "/outbox", { waitUntil: "load", timeout: left() });
      if (!res || res.status() >= 400) fail(`GET /outbox ended with HTTP ${res && res.status()}`);
      await expectVisible('[data-page="outbox"]', "outbox page");
      const capture = await page.locator("#outbox-mode").getAttribute("data-capture");
      if (capture !== "true") fail(`#outbox-mode data-capture should be "true", got ${JSON.stringify(capture)}`);
    });

    // i. Preview a Korean test mail at desktop and mobile widths.
    await step("test mail previewed at desktop and mobile widths", async () => {
      await fillField("#test-form input[name=to]", OWNER_EMAIL);
      await fillField("#test-form input[name=subject]", "{{ subscriber.name }}님께 드리는 소식");
      await page.locator("#test-form select[name=format]").selectOption("markdown");
      await fillField("#test-form textarea[name=body]", "# 안녕하세요\n\n[블로그](https://blog.example.kr)");
      await submitAndWait('#test-form button[value="preview"]');
      await expectVisible("#preview-subject", "preview subject");
      const subject = ((await page.locator("#preview-subject").textContent()) || "").trim();
      if (subject !== "홍길동님께 드리는 소식") fail(`preview subject is ${JSON.stringify(subject)}`);
      for (const [id, min, max] of [["#preview-desktop", 500, 2000], ["#preview-mobile", 250, 450]]) {
        const box = await page.locator(id).boundingBox();
        if (!box) fail(`${id} has no layout box`);
        if (box.width < min || box.width > max) fail(`${id} is ${box.width}px wide, expected ${min}-${max}`);
        const heading = page.frameLocator(id).locator("h1");
        const text = ((await heading.first().textContent({ timeout: left() })) || "").trim();
        if (text !== "안녕하세요") fail(`${id} shows heading ${JSON.stringify(text)}`);
      }
    });

    // j. Send it; the sender delivers to the capture store and the row turns "sent".
    await step("test mail sent and captured", async () => {
      await submitAndWait('#test-form button[value="send"]');
      await expectPath("/outbox");
      const row = page.locator("#outbox-table tbody tr").first();
      for (;;) {
        const status = await row.getAttribute("data-status", { timeout: left() }).catch(() => null);
        if (status === "sent") break;
        if (left() < 1000) fail(`the test mail's row is ${JSON.stringify(status)}, never "sent"`);
        await page.waitForTimeout(250);
        await page.reload({ waitUntil: "load", timeout: left() });
      }
    });

    // k. Open the captured message: subject, rendered body, raw .eml link.
    await step("captured message readable in the outbox", async () => {
      await page.locator("#outbox-table tbody tr a").first().click({ timeout: left() });
      await expectVisible("#message-subject", "message subject");
      const subject = ((await page.locator("#message-subject").textContent()) || "").trim();
      if (subject !== "홍길동님께 드리는 소식") fail(`captured subject is ${JSON.stringify(subject)}`);
      const text = ((await page.frameLocator("#message-desktop").locator("body").textContent({ timeout: left() })) || "");
      if (!text.includes("안녕하세요")) fail("the captured HTML does not contain the body");
      const raw = await page.locator("#message-raw").getAttribute("href");
      if (!raw || !raw.endsWith("/raw")) fail(`raw link is ${JSON.stringify(raw)}`);
      const res = await page.request.get(new URL(raw, page.url()).toString());
      const eml = await res.text();
      if (res.status() !== 200 || !eml.includes("Subject: =?utf-8?")) fail(`raw message not served as encoded MIME (HTTP ${res.status()})`);
    });

    console.log(`# all ${stepNo} steps passed`);
    return 0;
  } catch (e) {
    if (!(e && e.reported)) {
      console.error(`unexpected error: ${e && e.stack ? e.stack : e}`);
    }
    return 1;
  } finally {
    await browser.close().catch(() => {});
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`unexpected error: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
