// The browser test of Vigil's UI, driven by tests/e2e/tests/browser.rs:
// Chromium (Debian's, through playwright-core) signs in through the real
// OpenID provider, opens every page, checks that each shows the data the
// agent produced in the same test, and saves a screenshot of each. Then a
// viewer finds the editor actions refused, and sign-out goes through the
// provider. Exits non-zero on the first failed check.
//
// Env: BASE (the UI), ARTIFACTS (screenshot directory), APP (an application
// with traffic), UPSTREAM (one it calls).
import { chromium } from "playwright-core";

const { BASE, ARTIFACTS, APP, UPSTREAM } = process.env;
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const timings = {};

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function shot(page, name) {
  await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true });
  console.log(`screenshot ${ARTIFACTS}/${name}.png`);
}

async function rendered(page, name) {
  await page.waitForFunction((n) => document.body.dataset.rendered === n, name, { timeout: 30000 });
}

async function signIn(context, login) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.log(`pageerror: ${e.message}`));
  const t0 = Date.now();
  await page.goto(`${BASE}/`);
  // The gateway sent the browser to the provider's sign-in page.
  await page.waitForSelector('input[name="login"]', { timeout: 30000 });
  check(page.url().startsWith("http://localhost:"), `the provider's sign-in page (${page.url()})`);
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', "any password");
  await page.click('button[type="submit"]');
  // Consent, then back to the UI.
  await page.waitForSelector('button[type="submit"]', { timeout: 30000 });
  if (page.url().includes("/interaction/")) await page.click('button[type="submit"]');
  await rendered(page, "overview");
  timings[`sign-in ${login} ms`] = Date.now() - t0;
  check(page.url().startsWith(BASE), `back at the UI after signing in as ${login}`);
  return page;
}

const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  // ---- alice, an editor (group sre) ----
  const alice = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await signIn(alice, "alice");
  const user = await page.textContent("#user");
  check(user.includes("alice@example.com") && user.includes("editor"), `signed in as alice, editor (${user})`);
  await page.waitForSelector(`tr.app-row[data-app="${APP}"]`, { timeout: 60000 });
  check(true, `the overview lists ${APP}`);
  const rate = await page.textContent(`tr.app-row[data-app="${APP}"] td:nth-child(4)`);
  check(parseFloat(rate) > 0, `${APP} serves requests (${rate}/s)`);
  await shot(page, "01-overview");

  await page.goto(`${BASE}/#/map`);
  await rendered(page, "map");
  await page.waitForSelector(`.map-node[data-app="${APP}"]`);
  check(await page.$(`.map-edge[data-from="${APP}"][data-to="${UPSTREAM}"]`) !== null, `the map draws ${APP} → ${UPSTREAM}`);
  await shot(page, "02-service-map");

  await page.click(`.map-node[data-app="${APP}"]`);
  await rendered(page, "app");
  await page.waitForSelector("#red-charts .chart svg path", { state: "attached", timeout: 30000 });
  const cards = await page.textContent("#app-cards");
  check(cards.includes("Requests/s"), "the application page shows RED figures");
  await page.waitForSelector(`text=${UPSTREAM}`);
  await page.waitForTimeout(1500);
  await shot(page, "03-application");

  await page.goto(`${BASE}/#/traces`);
  await rendered(page, "traces");
  await page.fill('input[name="service"]', APP);
  await page.click('form.filters button[type="submit"]');
  await page.waitForSelector("tr.trace-row a", { timeout: 30000 });
  await shot(page, "04-traces");
  await page.click("tr.trace-row a");
  await rendered(page, "trace");
  const spans = await page.$$eval(".span-row", (rows) => rows.length);
  check(spans >= 2, `the waterfall shows the trace's spans (${spans})`);
  await page.click(".span-row");
  await shot(page, "05-trace-waterfall");

  await page.goto(`${BASE}/#/profiles/${APP}`);
  await rendered(page, "profiles");
  await page.waitForSelector("#flamegraph .flame-frame", { timeout: 30000 });
  const frames = await page.$$eval(".flame-frame", (f) => f.length);
  check(frames > 3, `the flamegraph has frames (${frames})`);
  await shot(page, "06-flamegraph");
  await page.selectOption('select[name="mode"]', "diff");
  await page.click('form.filters button[type="submit"]');
  await page.waitForSelector("#flamegraph", { timeout: 30000 });
  await shot(page, "07-flamegraph-diff");

  await page.goto(`${BASE}/#/logs`);
  await rendered(page, "logs");
  await page.waitForSelector("tr.log-row", { timeout: 30000 });
  const served = await page.$$eval("tr.log-row", (rows) => rows.filter((r) => r.textContent.includes("served GET / from backend")).length);
  check(served > 0, `the logs explorer shows frontend's log lines (${served})`);
  await page.waitForSelector("tr.pattern-row", { timeout: 30000 });
  await shot(page, "08-logs");

  await page.goto(`${BASE}/#/incidents`);
  await rendered(page, "incidents");
  await page.selectOption("#incident-state", "INCIDENT_STATE_UNSPECIFIED");
  await page.waitForTimeout(1000);
  await shot(page, "09-incidents");

  await page.goto(`${BASE}/#/heartbeats`);
  await rendered(page, "heartbeats");
  await page.waitForSelector("tr.check-row");
  await shot(page, "10-heartbeats");

  await page.goto(`${BASE}/#/settings`);
  await rendered(page, "settings");
  await page.waitForSelector("button.test-notification");
  check(!(await page.isDisabled("button.test-notification")), "an editor can send a test notification");
  await page.click("button.test-notification");
  await page.waitForSelector("text=delivered", { timeout: 20000 });
  await shot(page, "11-settings-editor");

  // Sign out: through the provider's end-session page, back to Vigil.
  await page.click("#logout button");
  await page.waitForURL((u) => u.toString().startsWith("http://localhost:"), { timeout: 20000 });
  const confirm = await page.$('button[value="yes"], button[autofocus]');
  if (confirm) await confirm.click();
  await page.waitForURL(`${BASE}/auth/signed-out`, { timeout: 20000 });
  await shot(page, "12-signed-out");
  const after = await page.evaluate(async () => (await fetch("/api/v1/session")).status);
  check(after === 401, "after signing out the session is gone");

  // ---- victor, a viewer ----
  const victor = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const vpage = await signIn(victor, "victor");
  check((await vpage.textContent("#user")).includes("viewer"), "victor is a viewer");
  await vpage.goto(`${BASE}/#/settings`);
  await rendered(vpage, "settings");
  await vpage.waitForSelector("button.test-notification");
  check(await vpage.isDisabled("button.test-notification"), "a viewer's test-notification button is disabled");
  const refused = await vpage.evaluate(async () => {
    const me = await (await fetch("/api/v1/session")).json();
    const r = await fetch("/api/v1/rpc/alerting/TestIntegration", {
      method: "POST", headers: { "content-type": "application/json", "x-csrf-token": me.csrf }, body: JSON.stringify({ name: "hook" }),
    });
    return [r.status, (await r.json()).error];
  });
  check(refused[0] === 403 && refused[1].includes("editor"), `the API refuses a viewer's test notification (${refused})`);
  await shot(page === vpage ? page : vpage, "13-settings-viewer");
  await vpage.goto(`${BASE}/#/incidents`);
  await rendered(vpage, "incidents");
  await shot(vpage, "14-incidents-viewer");
  console.log(`TIMINGS ${JSON.stringify(timings)}`);
} finally {
  await browser.close();
}
