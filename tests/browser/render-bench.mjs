// Time to first render of the overview and of the service map in Chromium,
// for services/ui-gateway/benches/gateway.rs. Signs in with the login token,
// then loads each page RUNS times from a fresh navigation and prints one
// JSON line of milliseconds: navigation start → the page rendered with its
// data (`body[data-rendered]` and every map node drawn).
// Env: BASE, TOKEN, APPS (map nodes expected), RUNS.
import { chromium } from "playwright-core";

const { BASE, TOKEN } = process.env;
const apps = Number(process.env.APPS || 200);
const runs = Number(process.env.RUNS || 10);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
await page.goto(`${BASE}/auth/login#token=${TOKEN}`);
await page.waitForFunction(() => document.body.dataset.rendered === "overview", null, { timeout: 60000 });
const result = { overview: [], map: [] };
for (let i = 0; i < runs; i++) {
  for (const [name, hash, done] of [
    ["overview", "#/", () => document.body.dataset.rendered === "overview" && document.querySelectorAll("tr.app-row").length > 0],
    ["map", "#/map", (n) => document.body.dataset.rendered === "map" && document.querySelectorAll(".map-node").length >= n],
  ]) {
    await page.goto("about:blank");
    const t0 = Date.now();
    await page.goto(`${BASE}/${hash}`);
    await page.waitForFunction(done, apps, { timeout: 60000, polling: 10 });
    result[name].push(Date.now() - t0);
  }
}
await page.screenshot({ path: process.env.SHOT || "/tmp/map-200.png" });
console.log(JSON.stringify(result));
await browser.close();
