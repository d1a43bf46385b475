// A console session that expires, in headless Chromium: prints one JSON line of what a person
// sees; tests/e2e/test_console.py asserts on it. The node runs with a short --admin-session-ttl-ms.
// Usage: node session.mjs ADMIN_URL TOKEN SHOTS_DIR
import { openConsole, signIn } from "./browser.mjs";

const [admin, token, shots] = process.argv.slice(2);
const { browser, page, seen, step, shot } = await openConsole(shots);
const loginError = () => page.textContent("#login-error");
try {
  step("login");
  await page.goto(`${admin}/console/#/actors`);
  await signIn(page, token);
  await page.waitForSelector("#actor-table tbody tr[data-key]");
  const stored = await page.evaluate(() => Object.values(sessionStorage));
  seen.phases.login = {
    session: await page.textContent("#session"),
    adminTokenKept: stored.some((value) => value.includes(token)),
    sessionToken: stored.find((value) => value.startsWith("serv-session.")) || "",
  };
  const sessionToken = seen.phases.login.sessionToken;
  const signedInAt = Date.now();

  step("expiry");
  // Nothing is clicked: the live feed ends with the session, and its reconnect is refused.
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.includes("expired"),
    null, { timeout: 20000 });
  seen.phases.expired = {
    error: await loginError(), navHidden: await page.isHidden("#nav"), loginShown: await page.isVisible("#login"),
    bannerShown: await page.isVisible("#banner"),
    afterMs: Date.now() - signedInAt, stored: await page.evaluate(() => sessionStorage.length),
  };
  await shot("session-expired");

  step("session-token");
  await signIn(page, sessionToken);
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.includes("session token"));
  seen.phases.sessionToken = { error: await loginError(), navHidden: await page.isHidden("#nav") };

  step("again");
  await signIn(page, token);
  await page.waitForSelector("#actor-table tbody tr[data-key]");
  seen.phases.again = { navShown: await page.isVisible("#nav"), error: await loginError() };
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
