#!/usr/bin/env bash
# The real-graph tests: build the package with colcon in a scratch workspace, source it and run
# test/graph/ and test/test_launch.py against real ROS 2 on a fresh ROS_DOMAIN_ID.
#   bash test/graph/run.sh            (from the repository root, .venv made by the test command)
# Activates $OVSEG_VENV (default .venv; .venv310 for Humble's Python 3.10) unless a venv is
# active, then sources $OVSEG_ROS2_SETUP (default ../shared/ros2/setup.sh; Humble:
# ../shared/ros2-humble/setup.sh) where it exists, else uses an already sourced ROS 2.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
VENV="${OVSEG_VENV:-.venv}"
[ -z "${VIRTUAL_ENV:-}" ] && [ -f "$VENV/bin/activate" ] && source "$VENV/bin/activate"
ROS2_SETUP="${OVSEG_ROS2_SETUP:-../shared/ros2/setup.sh}"
if [ -f "$ROS2_SETUP" ]; then
  set +u; source "$ROS2_SETUP"; set -u
fi
command -v colcon >/dev/null || { echo "real-graph tests: no ROS 2 (colcon) found" >&2; exit 1; }
WS="$(mktemp -d /tmp/ovseg_graph_ws.XXXXXX)"
trap 'rm -rf "$WS"' EXIT
mkdir -p "$WS/src" && ln -s "$ROOT" "$WS/src/ovseg_ros"
(cd "$WS" && colcon --log-base "$WS/log" build --packages-select ovseg_ros \
   --build-base "$WS/build" --install-base "$WS/install" --event-handlers console_cohesion- \
   >"$WS/build.log" 2>&1) || { cat "$WS/build.log"; exit 1; }
set +u; source "$WS/install/setup.bash"; set -u
# A domain nobody else on this machine uses: derived from the PID, 40-99, unless given.
export ROS_DOMAIN_ID="${OVSEG_GRAPH_DOMAIN_ID:-$(( 40 + $$ % 60 ))}"
echo "real-graph tests on ROS_DOMAIN_ID=$ROS_DOMAIN_ID"
status=0
OVSEG_GRAPH_NO_SKIP=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -m pytest -q -rs -p no:cacheprovider test/graph "$@" || status=1
python3 -m launch_testing.launch_test test/test_launch.py || status=1
exit $status
