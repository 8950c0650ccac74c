"""Data for veil: bundled and synthetic data sets, partitioners, and federated splits.

>>> from veil.data import federate, load_dataset
>>> fed = federate(load_dataset("digits"), method="dirichlet", num_clients=10, alpha=0.5)
>>> fed.num_clients, fed.feature_shape
(10, (1, 8, 8))
"""

from veil.data.dataset import Dataset
from veil.data.datasets import DATASETS, load_dataset, make_synthetic_classification
from veil.data.federation import ClientData, FederatedData, federate
from veil.data.fraud import TRANSACTION_FEATURES, make_fraud
from veil.data.partition import (
    PARTITION_METHODS,
    dirichlet_partition,
    iid_partition,
    partition,
    quantity_skew_partition,
    shard_partition,
    site_partition,
)

__all__ = [
    "DATASETS",
    "PARTITION_METHODS",
    "TRANSACTION_FEATURES",
    "ClientData",
    "Dataset",
    "FederatedData",
    "dirichlet_partition",
    "federate",
    "iid_partition",
    "load_dataset",
    "make_fraud",
    "make_synthetic_classification",
    "partition",
    "quantity_skew_partition",
    "shard_partition",
    "site_partition",
]
