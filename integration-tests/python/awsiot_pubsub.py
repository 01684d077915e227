"""Connects with the AWS IoT Device SDK for Python (AWSIoTPythonSDK 1.6.2),
unmodified, over mutual TLS; subscribes and publishes to itself.

usage: awsiot_pubsub.py HOST PORT CA CERT KEY CLIENT_ID TOPIC
Prints "received <payload>" and exits 0 on success.
"""
import sys
import threading

from AWSIoTPythonSDK.MQTTLib import AWSIoTMQTTClient

host, port, ca, cert, key, client_id, topic = sys.argv[1:8]
got = threading.Event()
payloads = []


def on_message(client, userdata, message):
    payloads.append(message.payload.decode())
    got.set()


client = AWSIoTMQTTClient(client_id)
client.configureEndpoint(host, int(port))
client.configureCredentials(ca, key, cert)
client.configureConnectDisconnectTimeout(10)
client.configureMQTTOperationTimeout(5)
if not client.connect():
    sys.exit("connect failed")
client.subscribe(topic, 1, on_message)
client.publish(topic, "hello from the device sdk", 1)
if not got.wait(10):
    sys.exit("no message within 10 s")
client.disconnect()
print("received " + payloads[0])
