"""SecureML's one-time mask of the data matrix (`veil.mpc.data_mask`)."""

import numpy as np
import pytest

from veil.errors import ConfigError, ProtocolError
from veil.mpc import OnDemandDealer, run_parties
from veil.mpc.data_mask import MaskedUse, MaskPlan, OnDemandMasks, deal_masks, mask_rows
from veil.mpc.sharing import AdditiveProtocol

USES = (MaskedUse((2, 0), False, (3, 1)), MaskedUse((2, 0), True, (2, 1)))


def test_dealt_masks_open_to_the_products_of_their_rows():
    first, second = deal_masks(MaskPlan((4, 3), USES))
    mask = first.share((4, 3)) + second.share((4, 3))
    for use in USES:
        (b0, c0), (b1, c1) = first.take(use), second.take(use)
        assert np.array_equal(c0 + c1, mask_rows(mask, use) @ (b0 + b1))
    assert mask_rows(mask, USES[1]).shape == (3, 2)


def test_a_stock_refuses_products_the_plan_does_not_list():
    stock, _ = deal_masks(MaskPlan((4, 3), USES))
    with pytest.raises(ProtocolError, match="the dealer masked a \\(4, 3\\) matrix"):
        stock.share((5, 3))
    with pytest.raises(ProtocolError, match="not the one the offline phase planned"):
        stock.take(USES[1])
    stock.take(USES[0])
    stock.take(USES[1])
    with pytest.raises(ProtocolError, match="masked product 2"):
        stock.take(USES[1])


def test_on_demand_masks_agree_between_the_two_views_or_refuse():
    masks = OnDemandMasks()
    first, second = masks.view(0), masks.view(1)
    with pytest.raises(ProtocolError, match="before the data was masked"):
        first.take(USES[0])
    mask = first.share((4, 3)) + second.share((4, 3))
    (b0, c0), (b1, c1) = first.take(USES[0]), second.take(USES[0])
    assert np.array_equal(c0 + c1, mask[[2, 0]] @ (b0 + b1)) and masks.uses == [USES[0]]
    first.take(USES[1])
    with pytest.raises(ProtocolError, match="disagree on masked product 1"):
        second.take(USES[0])


def test_row_batches_and_transposes_keep_the_mask_and_arithmetic_drops_it():
    x = np.arange(12.0).reshape(4, 3)

    def program(party, dealer):
        protocol = AdditiveProtocol(party, 16, dealer.view(party.index))
        shared = protocol.mask_data(protocol.share(0, x if party.index == 0 else None, x.shape))
        batch = shared[np.array([3, 1])]
        w = protocol.share(1, np.ones((3, 1)) if party.index == 1 else None, (3, 1))
        return (
            batch.mask.rows,
            batch.T.mask.transposed,
            (batch + 1.0).mask,
            shared[1:].mask,
            (batch @ w).reveal(),
            (batch.T @ protocol.constant(np.ones((2, 1)))).reveal(),
        )

    for rows, transposed, summed, sliced, product, back in (
        r.value for r in run_parties(program, [(OnDemandDealer(),)] * 2)
    ):
        assert rows == (3, 1) and transposed and summed is None and sliced is None
        assert np.allclose(product, x[[3, 1]].sum(axis=1, keepdims=True), atol=1e-3)
        assert np.allclose(back, x[[3, 1]].sum(axis=0)[:, None], atol=1e-3)


def test_boolean_and_negative_row_indices_are_read_as_numpy_reads_them():
    x = np.arange(15.0).reshape(5, 3)

    def program(party, dealer):
        protocol = AdditiveProtocol(party, 16, dealer.view(party.index))
        shared = protocol.mask_data(protocol.share(0, x if party.index == 0 else None, x.shape))
        chosen = shared[[False, False, True, True, False]]  # a mask, not rows 0, 0, 1, 1, 0
        negative = shared[[-1, 0]]
        w = protocol.share(1, np.ones((3, 1)) if party.index == 1 else None, (3, 1))
        return chosen.mask, negative.mask.rows, (chosen @ w).reveal(), (negative @ w).reveal()

    for mask, rows, chosen, negative in (
        r.value for r in run_parties(program, [(OnDemandDealer(),)] * 2)
    ):
        assert mask is None and rows == (4, 0)
        assert np.allclose(chosen, x[[2, 3]].sum(axis=1, keepdims=True), atol=1e-3)
        assert np.allclose(negative, x[[4, 0]].sum(axis=1, keepdims=True), atol=1e-3)


def test_a_data_mask_and_a_dealer_view_are_handed_out_once():
    stock, _ = deal_masks(MaskPlan((4, 3), USES))
    stock.share((4, 3))
    with pytest.raises(ProtocolError, match="would open the difference of the two"):
        stock.share((4, 3))
    masks = OnDemandMasks()
    masks.view(0).share((4, 3))
    with pytest.raises(ProtocolError, match="already used"):
        masks.view(0).share((4, 3))
    dealer = OnDemandDealer()
    dealer.view(1)
    with pytest.raises(ConfigError, match="a second would reuse its triples"):
        dealer.view(1)
