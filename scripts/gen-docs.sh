#!/usr/bin/env bash
# Regenerates the configuration reference in README.md from the code
# (`beehive config-reference`); services/beehive/tests/readme.rs fails when it is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(cargo run -q -p beehive -- config-reference)
TABLE="$table" python3 - <<'PY'
import os
p = "README.md"
s = open(p).read()
begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
a = s.index(begin) + len(begin)
b = s.index(end)
open(p, "w").write(s[:a] + os.environ["TABLE"] + "\n" + s[b:])
PY
