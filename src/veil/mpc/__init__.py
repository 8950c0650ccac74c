"""Secure multi-party computation: train and run models on secret-shared data.

Two parties share values additively over Z_{2^64} (SecureML) with Beaver triples from a trusted
dealer or from Paillier; three parties use replicated sharing (ABY3). Comparisons and ReLU run
as half-gates garbled circuits with IKNP OT extension. Each party is a process on TLS links
(`run_parties`), or a thread for tests. See docs/mpc.md.

>>> import numpy as np
>>> from veil.mpc import AdditiveProtocol, OnDemandDealer, relu, run_parties
>>> def program(party, x, dealer):
...     protocol = AdditiveProtocol(party, 16, dealer.view(party.index))
...     shared = protocol.share(0, x if party.index == 0 else None, (3,))
...     return relu(shared * shared - 1.0)[0].reveal()
>>> dealer = OnDemandDealer()
>>> results = run_parties(program, [(np.array([0.5, -2.0, 1.5]), dealer)] * 2)
"""

from veil.mpc.beaver import OnDemandDealer, PrecomputedTriples, TriplePlan, TrustedDealer
from veil.mpc.nonlinear import less_than, relu, sigmoid, sigmoid_error, sign_bit
from veil.mpc.paillier_triples import generate_paillier_triples
from veil.mpc.party import OperationCost, Party
from veil.mpc.replicated import ReplicatedProtocol
from veil.mpc.runner import PartiesFailed, PartyResult, run_parties
from veil.mpc.sharing import AdditiveProtocol, ArithmeticProtocol
from veil.mpc.tensor import SharedTensor, concatenate
from veil.mpc.training import PartyData, PartyOutput, TrainingSpec, secure_training_program

__all__ = [
    "AdditiveProtocol",
    "ArithmeticProtocol",
    "OnDemandDealer",
    "OperationCost",
    "PartiesFailed",
    "Party",
    "PartyData",
    "PartyOutput",
    "PartyResult",
    "PrecomputedTriples",
    "ReplicatedProtocol",
    "SharedTensor",
    "TrainingSpec",
    "TriplePlan",
    "TrustedDealer",
    "concatenate",
    "generate_paillier_triples",
    "less_than",
    "relu",
    "run_parties",
    "secure_training_program",
    "sigmoid",
    "sigmoid_error",
    "sign_bit",
]
