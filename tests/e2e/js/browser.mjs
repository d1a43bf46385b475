// Headless Chromium for the console tests (playwright-core, Debian's /usr/bin/chromium): opens a
// page at 1280×800 that records every console error with the step it happened in, and saves
// full-page screenshots under a directory.
import { chromium } from "playwright-core";

export async function openConsole(shots) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const seen = { consoleErrors: [], phases: {} };
  let phase = "start";
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("console", (msg) => { if (msg.type() === "error") seen.consoleErrors.push({ phase, text: msg.text() }); });
  page.on("pageerror", (error) => seen.consoleErrors.push({ phase, text: `page error: ${error.message}` }));
  return {
    browser, page, seen,
    step: (name) => { phase = name; },
    shot: (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true }),
  };
}

/** Signs in through the login form with `token`. */
export async function signIn(page, token) {
  await page.fill("#token", token);
  await page.click("#login-form button");
}
