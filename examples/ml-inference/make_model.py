"""Makes the small ONNX classifier the ml-inference example runs, and runs
it directly (the reference the function's answers are checked against).

    python make_model.py DIR            writes DIR/model.onnx and DIR/labels.txt
    python make_model.py --predict DIR  reads rows of 4 features (JSON) on
                                        stdin, prints each row's class
                                        probabilities (JSON)
    python make_model.py --bench DIR N  N inferences of one row, one after
                                        the other, as the function runs them
                                        (one thread): prints inferences/s

The model is a two-layer perceptron (4 features, 8 hidden units with ReLU,
3 classes with softmax) with fixed weights, built with the `onnx` package;
`--predict` runs it with `onnxruntime`, as the function does.
"""
import json
import os
import sys

LABELS = ["setosa", "versicolor", "virginica"]


def make(out):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(7)
    w1 = rng.normal(0, 1, (4, 8)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (8,)).astype(np.float32)
    w2 = rng.normal(0, 1, (8, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, (3,)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    os.makedirs(out, exist_ok=True)
    onnx.save(model, os.path.join(out, "model.onnx"))
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")


def predict(model_dir):
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(
        os.path.join(model_dir, "model.onnx"), providers=["CPUExecutionProvider"]
    )
    rows = np.asarray(json.load(sys.stdin), dtype=np.float32)
    probabilities = session.run(None, {"features": rows})[0]
    print(json.dumps([[float(p) for p in row] for row in probabilities]))


def bench(model_dir, n):
    import time

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        os.path.join(model_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    row = np.asarray([[-0.5, 1.3, -3.0, -1.2]], dtype=np.float32)
    start = time.perf_counter()
    for _ in range(n):
        session.run(None, {"features": row})
    print(round(n / (time.perf_counter() - start)))


if __name__ == "__main__":
    if sys.argv[1] == "--predict":
        predict(sys.argv[2])
    elif sys.argv[1] == "--bench":
        bench(sys.argv[2], int(sys.argv[3]))
    else:
        make(sys.argv[1])
