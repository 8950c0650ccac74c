"""The privacy claim of a run: one plain sentence saying who learns what, under which guarantee.

Each privacy link, as it is added to veil, contributes its clause here; a run without any states
plainly that it offers no formal guarantee.
"""

from __future__ import annotations

from veil.config import RunConfig


def privacy_claim(config: RunConfig, num_clients: int) -> str:
    """The claim sentence for ``config`` run over ``num_clients`` clients."""
    return (
        f"No formal privacy guarantee: raw data stays on the {num_clients} clients, but the server "
        f"sees each sampled client's model update in the clear "
        f"({config.server.optimizer} without differential privacy or secure aggregation)."
    )
