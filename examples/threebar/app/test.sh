#!/bin/sh
# The test stage: the page must say what the app is.
set -e
grep -q threebar app/www/index.html
echo "ok: index.html names the app"
