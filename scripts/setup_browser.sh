#!/usr/bin/env bash
# Installs what the lab's browser test and graph drawing need: Debian's `chromium` (headless
# screenshots of the lab report) and `graphviz` (the `dot` program that turns DOT into SVG).
# Idempotent: a second run finds both and exits 0 at once.
#
#   scripts/setup_browser.sh
#
# Needs root and apt-get (as on CI and the developers' machines). Without them it says what is
# missing and exits 0: the browser test then skips with that message, and graph drawing falls
# back to DOT text.
set -euo pipefail

say() { printf 'setup_browser: %s\n' "$*"; }

find_chromium() {
    for name in chromium chromium-browser google-chrome chrome; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

missing=()
find_chromium >/dev/null || missing+=(chromium)
command -v dot >/dev/null 2>&1 || missing+=(graphviz)

if [ "${#missing[@]}" -eq 0 ]; then
    say "chromium already present: $(find_chromium)"
    say "graphviz already present: $(command -v dot)"
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install ${missing[*]}: needs root and apt-get; install them by hand to run the browser test"
    exit 0
fi

say "installing ${missing[*]} from Debian packages"
export DEBIAN_FRONTEND=noninteractive
# Try without refreshing the package lists first (fast when they are current), then refresh.
if ! apt-get install -y --no-install-recommends "${missing[@]}" fonts-dejavu-core >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${missing[@]}" fonts-dejavu-core >/dev/null
fi
say "chromium: $(find_chromium || echo 'not found after install')"
say "graphviz: $(command -v dot || echo 'not found after install')"
