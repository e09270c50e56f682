#!/bin/sh
# Builds plugin.wasm (needs componentize-py: pip install componentize-py==0.25.1).
set -eu
cd "$(dirname "$0")"
componentize-py -d wit/plugin.wit -w plugin componentize app -o plugin.wasm >/dev/null
