"""paho-mqtt over mutual TLS with a client id that is not the certificate's
thing name: the broker must answer CONNACK "not authorized".

usage: paho_refused.py HOST PORT CA CERT KEY CLIENT_ID
Prints the CONNACK reason and exits 0 if it was "not authorized".
"""
import ssl
import sys
import threading

import paho.mqtt.client as mqtt

host, port, ca, cert, key, client_id = sys.argv[1:7]
done = threading.Event()
result = {}


def on_connect(client, userdata, flags, reason_code, properties):
    result["rc"] = reason_code
    done.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
client.on_connect = on_connect
client.connect(host, int(port))
client.loop_start()
if not done.wait(10):
    sys.exit("no CONNACK within 10 s")
client.loop_stop()
print(result["rc"])
sys.exit(0 if result["rc"] == "Not authorized" else 1)
