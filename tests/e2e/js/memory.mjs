// Opens the console's overview and reads the nodes table's memory cell once it shows the node's
// budget; prints one JSON line of what a person would see, which
// tests/e2e/test_memory_budget.py asserts on.
// Usage: node memory.mjs ADMIN_URL TOKEN SHOTS_DIR
import { openConsole, signIn } from "./browser.mjs";

const [admin, token, shots] = process.argv.slice(2);
const { browser, page, seen, step, shot } = await openConsole(shots);
try {
  step("login");
  await page.goto(`${admin}/console`);
  await signIn(page, token);
  await page.waitForSelector("#overview:not([hidden])");
  step("memory");
  // The node samples every 5 s: its first sample brings the budget.
  await page.waitForFunction(() => /\bof\b/.test(document.querySelector("#members [data-field=memory]")?.textContent ?? ""),
    null, { timeout: 30000 });
  seen.phases.memory = await page.$eval("#members [data-field=memory]", (cell) => ({
    text: cell.textContent, className: cell.className, color: getComputedStyle(cell).color }));
  await shot("memory");
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
