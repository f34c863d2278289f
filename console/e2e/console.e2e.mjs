// End-to-end test of the console in headless Chromium (Debian's `chromium`, driven by
// playwright-core): three users in three browser contexts sign up, become friends,
// chat both ways with receipts and typing, build a group, search a Chinese word and
// jump to the hit, lose the network and get exactly the missed messages back, send
// an image when the server has files, and see their session revoked.
// Every wait is on what the page shows; each failure leaves screenshots behind.
//
//   node e2e/console.e2e.mjs --url http://127.0.0.1:8080 [--out test-results] [--screenshot docs/console.png]

import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { deflateSync } from "node:zlib";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    url: { type: "string", default: process.env.BEEHIVE_URL ?? "http://127.0.0.1:8080" },
    out: { type: "string", default: "test-results" },
    screenshot: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM ?? "/usr/bin/chromium" },
    timeout: { type: "string", default: "15000" },
    log: { type: "string" }, // the server's log: email codes are read from it
  },
});
const BASE = args.url.replace(/\/+$/, "");
const TIMEOUT = Number(args.timeout);
mkdirSync(args.out, { recursive: true });

const run = Date.now().toString(36).slice(-5) + Math.random().toString(36).slice(2, 5);
const names = { a: `alice_${run}`, b: `bob_${run}`, c: `carol_${run}` };
const PASSWORD = "console-e2e-pass-1";

const problems = []; // uncaught errors and CSP violations, from every page
const results = [];
const pages = {};
let current = "";

function log(...m) {
  console.log(`[console-e2e] ${m.join(" ")}`);
}

async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true, ms: Date.now() - t0 });
    log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (error) {
    results.push({ name, ok: false, ms: Date.now() - t0 });
    log(`FAIL ${name}: ${error?.stack ?? error}`);
    for (const [who, page] of Object.entries(pages)) {
      const file = `${args.out}/failure-${name.replace(/[^a-z0-9]+/gi, "-")}-${who}.png`;
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      log(`     screenshot ${file}`);
    }
    throw error;
  }
}

function skip(name, reason) {
  results.push({ name, ok: true, skipped: reason });
  log(`skip ${name}: ${reason}`);
}

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

/** A new browser context (one device) watching for uncaught errors and CSP violations. */
async function device(browser, who, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport, locale: "en-US" });
  context.setDefaultTimeout(TIMEOUT);
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`);
    });
  });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("pageerror", (e) => problems.push(`${who}: uncaught ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    consoleErrors.push(m.text());
    if (/Content Security Policy|CSP violation/i.test(m.text())) problems.push(`${who}: ${m.text()}`);
  });
  pages[who] = page;
  return { context, page, consoleErrors };
}

const me = (page) => page.getByTestId("me");
const composer = (page) => page.getByLabel("Message", { exact: true });
const messages = (page) => page.getByTestId("messages");
const msg = (page, text) => messages(page).locator("li.msg", { hasText: text });

async function signUp(page, username) {
  await page.goto(`${BASE}/#/signup`);
  await page.getByLabel("Username", { exact: true }).fill(username);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByLabel("Nickname (optional)").fill("");
  await page.getByRole("button", { name: "Sign up" }).click();
  await me(page).getByText(`@${username}`, { exact: true }).waitFor();
}

/** Exactly `n` elements match (waits until they do). */
async function count(locator, n, what) {
  try {
    await locator.nth(n - 1).waitFor();
    const got = await locator.count();
    assert(got === n, `${what}: expected ${n}, found ${got}`);
  } catch (e) {
    throw new Error(`${what}: ${e.message}`);
  }
}

async function sendText(page, text) {
  await composer(page).fill(text);
  await composer(page).press("Enter");
  await msg(page, text).first().waitFor();
}

async function status(page, text, wanted) {
  await msg(page, text).and(page.locator(wanted.map((s) => `[data-status="${s}"]`).join(","))).waitFor();
}

/** A small valid PNG (an RGB gradient) built here, so no file is needed. */
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) row.set([(x * 255) / width, (y * 255) / height, 0xb0], 1 + x * 3);
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

async function main() {
  log(`gateway ${BASE}, chromium ${args.chromium}, users ${Object.values(names).join(" ")}`);
  const browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  try {
    await scenario(browser);
  } finally {
    await browser.close().catch(() => {});
  }
}

async function scenario(browser) {
  const A = await device(browser, "alice");
  const B = await device(browser, "bob");
  const a = A.page;
  const b = B.page;
  let direct = ""; // alice-bob conversation id

  await step("signed-out first visit loads without errors or CSP violations", async () => {
    const response = await a.goto(`${BASE}/`);
    assert(response.status() === 200, `GET / answered ${response.status()}`);
    const h = response.headers();
    assert((h["content-security-policy"] ?? "").includes("default-src 'self'"), "CSP header on /");
    assert(!(h["content-security-policy"] ?? "").includes("unsafe-inline"), "no unsafe-inline");
    assert(h["x-content-type-options"] === "nosniff", "nosniff on /");
    assert(h["cache-control"] === "no-cache", "index.html is not cached");
    await a.getByRole("heading", { name: "Sign in" }).waitFor();
    await a.getByLabel("Username, email or user id").waitFor();
    // keyboard: the first field takes focus by Tab
    assert(A.consoleErrors.length === 0, `console errors on first visit: ${A.consoleErrors.join(" | ")}`);
    assert(problems.length === 0, problems.join(" | "));
    const asset = await a.evaluate(() => document.querySelector("script[type=module]")?.getAttribute("src"));
    const r = await a.request.get(`${BASE}${asset}`);
    assert(r.headers()["cache-control"] === "public, max-age=31536000, immutable", `asset cache-control ${r.headers()["cache-control"]}`);
    assert(r.headers()["content-encoding"] === "gzip", `the script is sent gzipped (${r.headers()["content-encoding"]})`);
    const unknown = await a.request.get(`${BASE}/no-such-page`);
    assert(unknown.status() === 404, "unknown paths stay 404");
  });

  let firstRefreshToken = "";
  await step("two users sign up", async () => {
    await signUp(a, names.a);
    await signUp(b, names.b);
    firstRefreshToken = await a.evaluate(() => JSON.parse(localStorage.getItem("beehive.tokens") ?? "{}").refresh_token);
    assert(firstRefreshToken, "tokens are kept in localStorage");
  });

  await step("friend request sent, received live and accepted; presence shows online", async () => {
    await b.goto(`${BASE}/#/friends`);
    await b.getByRole("heading", { name: "Friend requests" }).waitFor();
    await a.goto(`${BASE}/#/friends`);
    await a.getByLabel("Find people by username or nickname").fill(names.b);
    await a.getByRole("button", { name: "Find people" }).click();
    await a.getByRole("button", { name: `Add ${names.b}` }).click();
    await a.getByTestId("user-results").getByText("Request sent").waitFor();
    // bob sees it without reloading
    await b.getByRole("button", { name: `Accept ${names.a}` }).click();
    await b.getByTestId("friends").locator("li", { hasText: names.a }).waitFor();
    // alice sees the acceptance live, with bob online
    await a.getByTestId("friends").locator("li", { hasText: names.b }).locator('[data-presence="online"]').waitFor();
  });

  await step("chat both ways with acks, delivered/read receipts, typing and unread counts", async () => {
    await a.getByRole("link", { name: `Chat with ${names.b}` }).click();
    await sendText(a, "hello bob 1");
    await a.waitForURL(/#\/c\//);
    direct = a.url().split("#/c/")[1].split("?")[0];
    // stored, then delivered to bob's open page (he is on the friends page, not the chat)
    await status(a, "hello bob 1", ["delivered"]);
    const item = b.locator(`[data-conversation="${direct}"]`);
    await item.getByTestId("unread").getByText("1", { exact: true }).waitFor();
    await item.click();
    await msg(b, "hello bob 1").waitFor();
    await status(a, "hello bob 1", ["read"]);
    await item.getByTestId("unread").waitFor({ state: "detached" });
    // typing
    await composer(b).pressSequentially("hi al", { delay: 20 });
    await a.getByTestId("typing").getByText(`${names.b} is typing…`).waitFor();
    await composer(b).fill("hi alice, 你好");
    await composer(b).press("Enter");
    await msg(a, "hi alice, 你好").waitFor();
    await status(b, "hi alice, 你好", ["read"]);
    await a.getByTestId("typing").getByText("typing").waitFor({ state: "detached" });
    await count(msg(a, "hello bob 1"), 1, "alice's first message once");
  });

  const C = await device(browser, "carol", { width: 390, height: 844 });
  const c = C.page;
  let group = "";

  await step("sign up with an email: a wrong code is refused, the logged code works", async () => {
    if (!args.log) {
      await signUp(c, names.c);
      log("     (no --log: signed up without an email)");
      return;
    }
    const email = `${names.c}@example.com`;
    await c.goto(`${BASE}/#/signup`);
    await c.getByLabel("Username", { exact: true }).fill(names.c);
    await c.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await c.getByLabel("Email (optional)").fill(email);
    await c.getByRole("button", { name: "Send code" }).click();
    await c.getByText(`A 6-digit code was sent to ${email}`).waitFor();
    // the dev mail sink writes one log line with the address and the code
    let code = null;
    const deadline = Date.now() + 10_000;
    while (!code) {
      for (const line of readFileSync(args.log, "utf8").split("\n")) {
        if (line.includes(email)) code = line.match(/"code":"(\d{6})"/)?.[1] ?? code;
      }
      if (!code) {
        assert(Date.now() < deadline, `no code for ${email} in ${args.log}`);
        await c.waitForTimeout(100); // polling a file, not the page
      }
    }
    const wrong = String((Number(code) + 1) % 1_000_000).padStart(6, "0");
    await c.getByLabel("Code", { exact: true }).fill(wrong);
    await c.getByRole("button", { name: "Sign up" }).click();
    await c.getByRole("alert").filter({ hasText: "the verification code is wrong or expired" }).waitFor();
    await c.getByLabel("Code", { exact: true }).fill(code);
    await c.getByRole("button", { name: "Sign up" }).click();
    await me(c).getByText(`@${names.c}`, { exact: true }).waitFor();
  });

  await step("a group with a third user: create, live arrival, rename", async () => {
    await a.getByRole("link", { name: "New group" }).click();
    await a.getByLabel("Group name").fill("Hive 蜂巢");
    await a.getByLabel(names.b, { exact: false }).check();
    await a.getByLabel("Find people by username").fill(names.c);
    await a.getByRole("button", { name: "Find", exact: true }).click();
    await a.getByLabel(`@${names.c}`).check();
    await a.getByRole("button", { name: "Create group" }).click();
    await a.waitForURL(/#\/c\//);
    group = a.url().split("#/c/")[1].split("?")[0];
    await a.getByRole("heading", { name: "Hive 蜂巢" }).waitFor();
    await sendText(a, "我们的消息 are in the group <b>bold</b>");
    await c.locator(`[data-conversation="${group}"]`).getByText("Hive 蜂巢").waitFor();
    await c.locator(`[data-conversation="${group}"]`).click();
    await msg(c, "我们的消息").waitFor();
    await sendText(c, "carol here");
    await b.locator(`[data-conversation="${group}"]`).getByText("carol here").waitFor();
    await a.getByRole("link", { name: "Group settings" }).click();
    await a.getByLabel("Group name").fill("Hive 蜂巢 v2");
    await a.getByRole("button", { name: "Rename" }).click();
    await b.locator(`[data-conversation="${group}"]`).getByText("Hive 蜂巢 v2").waitFor();
    await c.getByRole("heading", { name: "Hive 蜂巢 v2" }).waitFor();
    // phone width: nothing wider than the screen, the composer in view
    const overflow = await c.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `page is ${overflow}px wider than a phone screen`);
    await composer(c).waitFor();
    assert(await composer(c).isVisible(), "composer visible at phone width");
  });

  /** Runs a search until `text` shows among the hits (indexing takes a few seconds). */
  async function searchUntil(page, submit, text) {
    const hits = page.getByTestId("search-hits");
    const deadline = Date.now() + 20_000;
    for (;;) {
      await submit();
      const found = hits.locator("li", { hasText: text });
      await found.or(page.getByText("No messages found")).first().waitFor();
      if (await found.count()) return found.first();
      assert(Date.now() < deadline, `"${text}" never became searchable`);
      await page.goto(`${BASE}/#/chats`); // the same query again needs a new route
    }
  }

  await step("search a Chinese word, highlighted safely, and jump to the hit", async () => {
    await a.goto(`${BASE}/#/chats`);
    const hit = await searchUntil(a, async () => {
      await a.getByLabel("Search all messages").fill("消息");
      await a.getByRole("button", { name: "Search", exact: true }).click();
    }, "我们的");
    assert((await hit.locator("mark").first().textContent()) === "消息", "the hit is highlighted");
    assert((await hit.locator("b").count()) === 0, "highlight markup is not interpreted");
    assert((await hit.textContent()).includes("<b>bold</b>"), "escaped markup shows literally");
    await hit.locator("a").click();
    await a.waitForURL(new RegExp(`#/c/${group}\\?seq=`));
    await messages(a).locator("li.msg.focus", { hasText: "我们的消息" }).waitFor();
    // within one conversation
    const inGroup = await searchUntil(a, async () => {
      await a.goto(`${BASE}/#/c/${group}`);
      await a.getByLabel("Search in this conversation").fill("carol");
      await a.getByLabel("Search in this conversation").press("Enter");
    }, "carol here");
    await inGroup.locator("mark").first().waitFor();
    await a.getByRole("heading", { name: /in Hive 蜂巢/ }).waitFor();
  });

  await step("offline: presence goes grey, missed messages arrive after the reconnect, exactly once", async () => {
    await b.goto(`${BASE}/#/c/${direct}`);
    await msg(b, "hello bob 1").waitFor();
    await b.locator('[data-connection="open"]').waitFor({ state: "attached" });
    await a.goto(`${BASE}/#/c/${direct}`);
    await a.locator('#chat-title [data-presence="online"]').waitFor();
    await B.context.setOffline(true);
    await b.getByText("Offline: waiting for the network…").waitFor();
    // presence changes live: bob's only device went away
    await a.locator('#chat-title [data-presence="offline"]').waitFor();
    for (const n of [1, 2, 3]) await sendText(a, `missed ${n}`);
    for (const n of [1, 2, 3]) await status(a, `missed ${n}`, ["stored"]);
    assert((await msg(b, "missed").count()) === 0, "bob got messages while offline");
    await B.context.setOffline(false);
    await b.getByText("Offline: waiting for the network…").waitFor({ state: "detached" });
    await a.locator('#chat-title [data-presence="online"]').waitFor();
    for (const n of [1, 2, 3]) await count(msg(b, `missed ${n}`), 1, `"missed ${n}" on bob's page`);
    await count(msg(b, "hello bob 1"), 1, "earlier message not duplicated");
    await count(msg(b, "hi alice, 你好"), 1, "own earlier message not duplicated");
    const order = await msg(b, "missed").allTextContents();
    assert(order.map((t) => t.match(/missed \d/)[0]).join(",") === "missed 1,missed 2,missed 3", `order ${order}`);
    await status(a, "missed 3", ["read"]);
  });

  await step("two tabs of one user behave as two devices", async () => {
    const a2 = await A.context.newPage();
    a2.on("pageerror", (e) => problems.push(`alice tab 2: uncaught ${e.message}`));
    pages["alice-tab2"] = a2;
    await a2.goto(`${BASE}/#/c/${direct}`);
    await msg(a2, "missed 3").waitFor();
    await a2.locator('[data-connection="open"]').waitFor({ state: "attached" });
    await sendText(a, "sent from tab one");
    await msg(a2, "sent from tab one").and(a2.locator("[data-seq]")).waitFor();
    await sendText(a2, "sent from tab two");
    await msg(a, "sent from tab two").and(a.locator("[data-seq]")).waitFor();
    await count(msg(b, "sent from tab two"), 1, "bob gets the second tab's message once");
    // bob has the chat open: both tabs see his read receipt
    await status(a, "sent from tab two", ["read"]);
    await status(a2, "sent from tab two", ["read"]);
    await a2.close();
    delete pages["alice-tab2"];
  });

  if (args.screenshot) {
    await step("screenshot for the README", async () => {
      await a.goto(`${BASE}/#/c/${direct}`);
      await msg(a, "missed 3").waitFor();
      await a.screenshot({ path: args.screenshot });
      log(`screenshot ${args.screenshot}`);
    });
  }

  await step("sign in on a second device and page the group's history upward", async () => {
    const login = await a.request.post(`${BASE}/api/v1/auth/login`, { data: { login: names.a, password: PASSWORD } });
    assert(login.status() === 200, `login ${login.status()}`);
    const auth = { Authorization: `Bearer ${(await login.json()).access_token}` };
    for (let i = 1; i <= 60; i++) {
      const r = await a.request.post(`${BASE}/api/v1/messages`, {
        headers: auth,
        data: { client_msg_id: `page-${run}-${i}`, conversation_id: group, msg_type: "text", content: `history ${i}` },
      });
      assert(r.status() === 201, `POST /messages ${r.status()}`);
    }
    const D = await device(browser, "alice-2");
    const d = D.page;
    await d.goto(`${BASE}/`);
    await d.getByLabel("Username, email or user id").fill(names.a);
    await d.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await d.getByLabel("Password", { exact: true }).press("Enter");
    await me(d).getByText(`@${names.a}`, { exact: true }).waitFor();
    await d.locator(`[data-conversation="${group}"]`).click();
    await msg(d, "history 60").waitFor();
    assert((await msg(d, "我们的消息").count()) === 0, "only the latest page is loaded at first");
    await d.getByRole("button", { name: "Load earlier messages" }).click();
    await msg(d, "我们的消息").waitFor();
    await d.getByText("Beginning of the conversation").waitFor();
    const seqs = await messages(d).locator("li.msg").evaluateAll((els) => els.map((e) => Number(e.getAttribute("data-seq"))));
    assert(seqs.length === 62 && seqs.every((s, i) => s === i + 1), `seqs 1..62 once each, got ${seqs.join(",")}`);
    await D.context.close();
    delete pages["alice-2"];
  });

  await step("group membership: a member leaves, the owner removes another", async () => {
    await b.goto(`${BASE}/#/c/${group}/settings`);
    await b.getByRole("button", { name: "Leave the group…" }).click();
    await b.getByRole("button", { name: /^Yes, leave/ }).click();
    await b.waitForURL(/#\/chats/);
    await b.locator(`[data-conversation="${group}"]`).waitFor({ state: "detached" });
    await a.goto(`${BASE}/#/c/${group}/settings`);
    await a.getByRole("heading", { name: "Members (2)" }).waitFor();
    await a.getByRole("button", { name: `Remove ${names.c}` }).click();
    await a.getByRole("heading", { name: "Members (1)" }).waitFor();
  });

  const options = await a.request.fetch(`${BASE}/api/v1/files/uploads`, { method: "OPTIONS", headers: { "Tus-Resumable": "1.0.0" } });
  if (options.status() === 204 && options.headers()["tus-version"]) {
    await step("send an image over tus, see the thumbnail, open it full size", async () => {
      await a.goto(`${BASE}/#/c/${direct}`);
      await a.getByLabel("Attach a file").setInputFiles({ name: "gradient.png", mimeType: "image/png", buffer: png(320, 200) });
      await messages(a).getByTestId("thumbnail").first().waitFor();
      // Bob was left on another page by the earlier steps: he opens the chat.
      await b.goto(`${BASE}/#/c/${direct}`);
      const thumb = messages(b).getByTestId("thumbnail").first();
      await thumb.waitFor();
      await b.getByRole("button", { name: "Open image gradient.png" }).first().click();
      const full = b.getByTestId("full-image");
      await full.waitFor();
      await b.waitForFunction(() => {
        const img = document.querySelector('[data-testid="full-image"]');
        return img instanceof HTMLImageElement && img.complete && img.naturalWidth === 320;
      });
    });
  } else {
    await step("without files on the server the console says so", async () => {
      await a.goto(`${BASE}/#/c/${direct}`);
      await a.getByTestId("files-unavailable").waitFor();
    });
    skip("send an image over tus, see the thumbnail, open it full size", `the gateway has no file endpoints yet (OPTIONS /api/v1/files/uploads answered ${options.status()}); the files branch has not landed`);
  }

  await step("friend requests can be rejected and friends removed", async () => {
    await b.goto(`${BASE}/#/friends`);
    await c.goto(`${BASE}/#/friends`);
    await c.getByLabel("Find people by username or nickname").fill(names.b);
    await c.getByRole("button", { name: "Find people" }).click();
    await c.getByRole("button", { name: `Add ${names.b}` }).click();
    const incoming = b.getByTestId("incoming-requests").locator("li", { hasText: names.c });
    await incoming.getByRole("button", { name: "Reject" }).click();
    await incoming.waitFor({ state: "detached" });
    await a.goto(`${BASE}/#/friends`);
    const bob = a.getByTestId("friends").locator("li", { hasText: names.b });
    await bob.getByRole("button", { name: "Remove" }).click();
    await bob.waitFor({ state: "detached" });
  });

  await step("a password change elsewhere revokes the session: the page says so", async () => {
    const login = await a.request.post(`${BASE}/api/v1/auth/login`, { data: { login: names.b, password: PASSWORD } });
    assert(login.status() === 200, `login ${login.status()}`);
    const token = (await login.json()).access_token;
    const changed = await a.request.post(`${BASE}/api/v1/users/me/password`, {
      headers: { Authorization: `Bearer ${token}` },
      data: { old_password: PASSWORD, new_password: `${PASSWORD}-2` },
    });
    assert(changed.status() === 204, `password change ${changed.status()}`);
    await b.getByRole("heading", { name: "Session revoked" }).waitFor();
    await b.getByText("Your password was changed on another device.").waitFor();
    await b.getByRole("button", { name: "Sign in again" }).click();
    await b.getByRole("heading", { name: "Sign in" }).waitFor();
  });

  await step("the access token was refreshed in the background and the session survives a reload", async () => {
    const tokens = await a.evaluate(() => JSON.parse(localStorage.getItem("beehive.tokens") ?? "{}"));
    const lifetime = (tokens.expires_at - tokens.issued_at) / 1000;
    // with a short BEEHIVE_ACCESS_TOKEN_TTL (scripts/test-console.sh sets 10s) the run outlives several tokens
    if (lifetime <= 30) assert(tokens.refresh_token !== firstRefreshToken, "the refresh token was rotated");
    await a.reload();
    await me(a).getByText(`@${names.a}`, { exact: true }).waitFor();
    await a.locator('[data-connection="open"]').waitFor({ state: "attached" });
  });

  await step("sign out", async () => {
    await c.getByRole("button", { name: "Sign out" }).click();
    await c.getByRole("heading", { name: "Sign in" }).waitFor();
  });

  await step("no uncaught errors or CSP violations on any page", async () => {
    assert(problems.length === 0, problems.join(" | "));
  });
}

main().then(
  () => {
    const skipped = results.filter((r) => r.skipped).length;
    log(`PASSED ${results.length - skipped} steps, ${skipped} skipped`);
  },
  (error) => {
    log(`FAILED in "${current}": ${error?.message ?? error}`);
    process.exit(1);
  },
);
