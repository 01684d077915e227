"""Finds the core with the AWS IoT Device SDK for Python's discovery client
(AWSIoTPythonSDK 1.6.2, DiscoveryInfoProvider), unmodified, then connects
to the broker with the CA and connectivity it got and round-trips a message,
as the SDK's basicDiscovery sample does.

usage: awsiot_discovery.py HOST PORT BOOTSTRAP_CA CERT KEY THING TOPIC
BOOTSTRAP_CA verifies the discovery server (the group CA here, as the
server certificate is the core's). Prints "discovered <group> <n>
connectivity" and "received <payload>"; exits 0 on success. On a refusal
prints "refused <ExceptionName>" and exits 3.
"""
import os
import sys
import tempfile
import threading

from AWSIoTPythonSDK.core.greengrass.discovery.providers import DiscoveryInfoProvider
from AWSIoTPythonSDK.exception.AWSIoTExceptions import (
    DiscoveryDataNotFoundException,
    DiscoveryUnauthorizedException,
    DiscoveryInvalidRequestException,
    DiscoveryFailure,
)
from AWSIoTPythonSDK.MQTTLib import AWSIoTMQTTClient

host, port, bootstrap_ca, cert, key, thing, topic = sys.argv[1:8]

provider = DiscoveryInfoProvider()
provider.configureEndpoint(host, int(port))
provider.configureCredentials(bootstrap_ca, cert, key)
provider.configureTimeout(10)
try:
    info = provider.discover(thing)
except (DiscoveryDataNotFoundException, DiscoveryUnauthorizedException,
        DiscoveryInvalidRequestException, DiscoveryFailure) as e:
    print("refused " + type(e).__name__)
    sys.exit(3)

groups = info.toObjectAtGroupLevel()
group_id, group = list(groups.items())[0]
ca_pem = group.caList[0]
core = group.coreConnectivityInfoList[0]
print("discovered %s %d connectivity" % (group_id, len(core.connectivityInfoList)))
print("with %d CAs" % len(group.caList))
with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
    f.write(ca_pem)
    ca_file = f.name

got = threading.Event()
payloads = []


def on_message(client, userdata, message):
    payloads.append(message.payload.decode())
    got.set()


connected = None
for c in core.connectivityInfoList:
    client = AWSIoTMQTTClient(thing)
    client.configureEndpoint(c.host, c.port)
    client.configureCredentials(ca_file, key, cert)
    client.configureConnectDisconnectTimeout(10)
    client.configureMQTTOperationTimeout(5)
    try:
        if client.connect():
            connected = client
            break
    except Exception as e:  # the sample tries the next address
        print("could not connect to %s:%d: %s" % (c.host, c.port, e))
os.unlink(ca_file)
if connected is None:
    sys.exit("no connectivity entry worked")
connected.subscribe(topic, 1, on_message)
connected.publish(topic, "hello after discovery", 1)
if not got.wait(10):
    sys.exit("no message within 10 s")
connected.disconnect()
print("received " + payloads[0])
