"""A Greengrass function that classifies feature vectors arriving by MQTT
with an ONNX model from its machine learning model resource, and publishes
the classes.

Input (routed to the function): {"id": "...", "features": [f1, f2, f3, f4]}
or a batch, {"id": "...", "features": [[...], [...]]}.
Output on RESULT_TOPIC (default ml/classifier/results):
{"id": "...", "results": [{"class": 2, "label": "virginica",
                           "probabilities": [0.01, 0.12, 0.87]}]}
or, for input it cannot classify, {"id": "...", "error": "why"}.

The model resource is bound at MODEL_DIR (default /ml/classifier, the
resource's DestinationPath) and holds model.onnx and labels.txt. Run it
pinned: the model is loaded once, when the function starts.
"""
import json
import os

import greengrasssdk
import numpy as np
import onnxruntime as ort

MODEL_DIR = os.environ.get("MODEL_DIR", "/ml/classifier")
RESULT_TOPIC = os.environ.get("RESULT_TOPIC", "ml/classifier/results")

iot = greengrasssdk.client("iot-data")

options = ort.SessionOptions()
# One core per inference: a core's other work keeps the rest.
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(
    os.path.join(MODEL_DIR, "model.onnx"), options, providers=["CPUExecutionProvider"]
)
INPUT = session.get_inputs()[0]
WIDTH = INPUT.shape[1]
with open(os.path.join(MODEL_DIR, "labels.txt")) as f:
    LABELS = [line.strip() for line in f if line.strip()]


def rows_of(event):
    """The batch of feature rows in `event`, or why there is none."""
    if not isinstance(event, dict) or "features" not in event:
        raise ValueError("expected {\"id\": ..., \"features\": [...]}")
    features = event["features"]
    if isinstance(features, list) and features and not isinstance(features[0], list):
        features = [features]
    try:
        rows = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError("features must be numbers")
    if rows.ndim != 2 or rows.shape[1] != WIDTH or rows.shape[0] == 0:
        raise ValueError("each row needs %d features" % WIDTH)
    return rows


def classify(rows):
    probabilities = session.run(None, {INPUT.name: rows})[0]
    return [
        {
            "class": int(p.argmax()),
            "label": LABELS[int(p.argmax())] if int(p.argmax()) < len(LABELS) else "",
            "probabilities": [float(v) for v in p],
        }
        for p in probabilities
    ]


def handler(event, context):
    ident = event.get("id") if isinstance(event, dict) else None
    try:
        answer = {"id": ident, "results": classify(rows_of(event))}
    except ValueError as e:
        answer = {"id": ident, "error": str(e)}
    iot.publish(topic=RESULT_TOPIC, payload=json.dumps(answer))
    return answer
