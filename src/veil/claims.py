"""The privacy claim of a run: one plain sentence saying who learns what, under which guarantee.

Each privacy link, as it is added to veil, contributes its clause here; a run without any states
plainly that it offers no formal guarantee.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from veil.config import RunConfig

if TYPE_CHECKING:
    from veil.privacy.federated import DpPlan


def privacy_claim(config: RunConfig, num_clients: int) -> str:
    """The claim sentence for ``config`` run over ``num_clients`` clients."""
    return (
        f"No formal privacy guarantee: raw data stays on the {num_clients} clients, but the server "
        f"sees each sampled client's model update in the clear "
        f"({config.server.optimizer} without differential privacy or secure aggregation)."
    )


def secure_sum_claim(
    clause: str,
    config: RunConfig,
    dp: DpPlan | None,
    epsilon: float | None,
    rounds: int,
    noise: str,
) -> str:
    """The claim of a run whose server sees only a sum (``clause`` says how), with the DP
    guarantee if any; ``noise`` describes the clients' distributed noise (client-level DP)."""
    if dp is None:
        return f"No differential privacy: {clause}; the released models carry no formal guarantee."
    if dp.local_dp is not None:  # sample level: DP-SGD inside the clients
        return dp.claim(epsilon, rounds).rstrip(".") + "; " + clause + "."
    c = config.privacy
    return (
        f"The released models are (ε = {epsilon:.3g}, δ = {c.delta:g})-differentially private "
        f"at the client level after {rounds} rounds (zero-out neighbouring; {noise}, "
        f"{c.accountant.upper()} accounting); {clause}."
    )
