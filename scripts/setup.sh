#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment in .venv with everything KD SAM needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -r requirements.txt
python -m pip install -q -e ".[teacher,gui,seg,fast,test]"
# Qt needs a few system libraries offscreen; install them where apt is available and we are root.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! ldconfig -p | grep -q libxkbcommon-x11; then
    apt-get install -y -q libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
      libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 \
      libgl1 libegl1 libfontconfig1 libdbus-1-3 >/dev/null 2>&1 || echo "warning: could not install Qt system libraries" >&2
  fi
fi
echo "KD SAM environment ready: . .venv/bin/activate"
