#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the dashboard's browser tests (tests/test_dashboard.py),
# installed with apt-get when missing. Browsers are never downloaded any other way: Playwright
# drives this /usr/bin/chromium, and `playwright install` is never run.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
echo "browser: installing Debian's chromium and chromium-driver"
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q chromium chromium-driver >/dev/null
/usr/bin/chromium --version
