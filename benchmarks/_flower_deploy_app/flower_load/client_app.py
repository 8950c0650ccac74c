"""Flower ClientApp: one epoch of softmax-regression SGD (batch 16, rate 0.1) on the node's rows.

The rows are synthetic, of the shape each veil site holds in ``veil bench deploy`` (7 rows of
64 features, 10 classes, seeded by the node's ``partition-id``), so the model (650 float32
parameters) and the messages are the same size as veil's; numpy only, so that the ClientApp
process Flower starts for every task stays as light as it can be.
"""

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

ROWS, FEATURES, CLASSES, BATCH, RATE = 7, 64, 10, 16, 0.1

app = ClientApp()


def local_rows(node: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(node)
    x = rng.uniform(0, 1, (ROWS, FEATURES)).astype(np.float32)
    return x, rng.integers(0, CLASSES, ROWS)


def sgd_epoch(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray):
    """One pass of mini-batch SGD on the cross-entropy of softmax(x @ weight.T + bias)."""
    weight, bias = weight.copy(), bias.copy()
    for start in range(0, len(x), BATCH):
        xb, yb = x[start : start + BATCH], y[start : start + BATCH]
        logits = xb @ weight.T + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1  # gradient of the loss with respect to the logits
        weight -= RATE * p.T @ xb / len(yb)
        bias -= RATE * p.mean(axis=0)
    return weight, bias


@app.train()
def train(msg: Message, context) -> Message:
    arrays = msg.content["arrays"]
    x, y = local_rows(int(context.node_config["partition-id"]))
    weight, bias = sgd_epoch(arrays["weight"].numpy(), arrays["bias"].numpy(), x, y)
    content = RecordDict(
        {
            "arrays": ArrayRecord({"weight": Array(weight), "bias": Array(bias)}),
            "metrics": MetricRecord({"num-examples": ROWS}),
        }
    )
    return Message(content=content, reply_to=msg)
