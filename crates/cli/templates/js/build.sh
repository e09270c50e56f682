#!/bin/sh
# Builds plugin.wasm with componentize-js: this project's (`npm install`),
# or one on PATH.
set -eu
cd "$(dirname "$0")"
if [ -x node_modules/.bin/componentize-js ]; then
    componentize=node_modules/.bin/componentize-js
else
    componentize=componentize-js
fi
"$componentize" app.js --wit wit/plugin.wit --world-name plugin \
    --disable http fetch-event stdio -o plugin.wasm >/dev/null
