"""Flower ServerApp: stock FedAvg over every SuperNode each round, no evaluation, timed.

Each round is timed from the strategy's ``configure_train`` to the end of its
``aggregate_train`` and written, with the number of replies and errors, to the run config's
``timing-file`` (JSON) after every round. After round 1 and after the last round the strategy
also reads the SuperNodes' bytes on the wire (``_tcp_traffic.TrafficMeter``, on ``PYTHONPATH``)
between rounds, as veil's coordinator does.
"""

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import FedAvg

from _tcp_traffic import TrafficMeter
from flower_load.client_app import CLASSES, FEATURES

app = ServerApp()


class TimedFedAvg(FedAvg):
    def __init__(self, settings, meter: TrafficMeter, **fedavg):
        super().__init__(**fedavg)
        self.timing_file = Path(settings["timing-file"])
        self.last_round = int(settings["num-server-rounds"])
        self.meter = meter
        self.rounds: list[dict] = []
        self.began = 0.0

    def configure_train(self, server_round, arrays, config, grid):
        self.began = time.time()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        result = super().aggregate_train(server_round, replies)
        record = {
            "round": server_round,
            "start": self.began,
            "end": time.time(),
            "replies": len(replies),
            "errors": [m.error.reason for m in replies if m.has_error()],
        }
        if server_round in (1, self.last_round):
            record["traffic"] = self.meter.read()
        self.rounds.append(record)
        partial = self.timing_file.with_suffix(".partial")
        partial.write_text(json.dumps(self.rounds))
        partial.replace(self.timing_file)  # the benchmark never reads half a file
        return result


@app.main()
def main(grid, context) -> None:
    settings = context.run_config
    nodes = int(settings["num-clients"])
    pids = [int(pid) for pid in str(settings["supernode-pids"]).split()]
    meter = TrafficMeter(int(settings["superlink-port"]), pids).start()
    strategy = TimedFedAvg(
        settings,
        meter,
        fraction_train=1.0,
        min_train_nodes=nodes,
        min_available_nodes=nodes,
        fraction_evaluate=0.0,
    )
    initial = ArrayRecord(
        {
            "weight": Array(np.zeros((CLASSES, FEATURES), np.float32)),
            "bias": Array(np.zeros(CLASSES, np.float32)),
        }
    )
    try:
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=strategy.last_round)
    finally:
        meter.stop()
