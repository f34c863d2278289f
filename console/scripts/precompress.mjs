// Writes a gzip copy next to every text asset of dist/assets (`x.js` -> `x.js.gz`)
// when it is smaller; the gateway sends it to clients that accept gzip.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync, constants } from "node:zlib";

const dir = new URL("../dist/assets/", import.meta.url).pathname;
let saved = 0;
for (const name of readdirSync(dir)) {
  if (!/\.(js|mjs|css|svg|json|html|txt)$/.test(name)) continue;
  const raw = readFileSync(join(dir, name));
  const gz = gzipSync(raw, { level: constants.Z_BEST_COMPRESSION });
  if (gz.length < raw.length) {
    writeFileSync(join(dir, `${name}.gz`), gz);
    saved += raw.length - gz.length;
    console.log(`  ${name}: ${raw.length} -> ${gz.length} bytes gzipped`);
  }
}
console.log(`precompressed assets (${saved} bytes saved per first visit)`);
