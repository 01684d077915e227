"""Finds the core with the AWS IoT Device SDK v2 for Python's discovery client
(awsiotsdk 1.31.0 / awscrt 0.36.1, awsiot.greengrass_discovery.DiscoveryClient),
unmodified, then connects to the broker with the CA and connectivity it got
and round-trips a message, as the SDK's basic_discovery.py sample does.

usage: awsiotsdk_discovery.py HOST PORT BOOTSTRAP_CA CERT KEY THING TOPIC
BOOTSTRAP_CA verifies the discovery server (the group CA, which issued
the core's server certificate). HOST is given to the client as its
documented `gg_server_name`, so it is the address connected to, the TLS
server name (SNI and certificate check) and the `host` header; the server
certificate must name it (the core's names `localhost` and `127.0.0.1`).
The client has no port argument: it picks 443 (ALPN `x-amzn-http-ca`) or
8443, and PORT is set on its public `port` attribute after construction.

Prints "discovered <group> <n> connectivity", "with <n> CAs" and
"received <payload>" (the payload is
"hello after discovery", as in the v1 script); exits 0 on success. On a refusal
(any HTTP status but 200) prints "refused DiscoveryException" and
"status <code>", and exits 3.
"""
import sys
import threading

from awscrt import io, mqtt
from awsiot import mqtt_connection_builder
from awsiot.greengrass_discovery import DiscoveryClient, DiscoveryException

USAGE = "usage: awsiotsdk_discovery.py HOST PORT BOOTSTRAP_CA CERT KEY THING TOPIC"
if len(sys.argv) != 8 or sys.argv[1] in ("-h", "--help"):
    sys.exit(USAGE)
host, port, bootstrap_ca, cert, key, thing, topic = sys.argv[1:8]
port = int(port)
TIMEOUT = 10

# Discovery, as in the sample: mTLS context with the bootstrap CA as the only trust root.
tls_options = io.TlsContextOptions.create_client_with_mtls_from_path(cert, key)
tls_options.override_default_trust_store_from_path(None, bootstrap_ca)
tls_context = io.ClientTlsContext(tls_options)
socket_options = io.SocketOptions()
socket_options.connect_timeout_ms = TIMEOUT * 1000

# region is unused when gg_server_name is given (it would otherwise make
# greengrass-ats.iot.<region>.amazonaws.com).
discovery = DiscoveryClient(io.ClientBootstrap.get_or_create_static_default(),
                            socket_options, tls_context, "us-east-1",
                            gg_server_name=host)
discovery.port = port  # public slot; set to 443 (ALPN) or 8443 by __init__
try:
    # A certificate the client rejects is reported only after ~25 s.
    info = discovery.discover(thing).result(3 * TIMEOUT)
except DiscoveryException as e:
    print("refused " + type(e).__name__)
    print("status %d" % e.http_response_code)
    sys.exit(3)

group = info.gg_groups[0]
core = group.cores[0]
print("discovered %s %d connectivity" % (group.gg_group_id, len(core.connectivity)))
print("with %d CAs" % len(group.certificate_authorities))
ca_bytes = group.certificate_authorities[0].encode("utf-8")

got = threading.Event()
payloads = []


def on_message(topic, payload, **kwargs):
    payloads.append(payload.decode())
    got.set()


connected = None
for c in core.connectivity:
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint=c.host_address,
        port=c.port,
        cert_filepath=cert,
        pri_key_filepath=key,
        ca_bytes=ca_bytes,
        client_id=thing,
        clean_session=False,
        keep_alive_secs=30,
        tcp_connect_timeout_ms=TIMEOUT * 1000)
    try:
        connection.connect().result(TIMEOUT)
        connected = connection
        break
    except Exception as e:  # the sample tries the next address
        print("could not connect to %s:%s: %s" % (c.host_address, c.port, e))
if connected is None:
    sys.exit("no connectivity entry worked")

subscribed, _ = connected.subscribe(topic, mqtt.QoS.AT_LEAST_ONCE, on_message)
subscribed.result(TIMEOUT)
published, _ = connected.publish(topic, "hello after discovery", mqtt.QoS.AT_LEAST_ONCE)
published.result(TIMEOUT)
if not got.wait(TIMEOUT):
    sys.exit("no message within %d s" % TIMEOUT)
connected.disconnect().result(TIMEOUT)
print("received " + payloads[0])
