import dataclasses
import datetime

import pytest

from veil.tee.collateral import (
    UNRECOGNIZED,
    Collateral,
    open_document,
    quoting_enclave_status,
    signed_document,
    tcb_status,
)
from veil.tee.errors import (
    CollateralExpired,
    CollateralInvalid,
    MalformedEvidence,
    QuotingEnclaveRefused,
)
from veil.tee.quote import parse_quote
from veil.tee.sgx_extensions import PckPlatform

from .conftest import NOW

LEVELS = {
    "id": "SGX",
    "fmspc": "00906ED50000",
    "tcbLevels": [
        {"tcb": {"sgxtcbcomponents": [{"svn": 5}] * 16, "pcesvn": 11}, "tcbStatus": "UpToDate"},
        {"tcb": {"sgxtcbcomponents": [{"svn": 3}] * 16, "pcesvn": 10}, "tcbStatus": "OutOfDate"},
    ],
}


def platform_at(svn, pce_svn, fmspc="00906ed50000"):
    return PckPlatform(bytes.fromhex(fmspc), bytes(2), (svn,) * 16, pce_svn, bytes(16))


@pytest.mark.parametrize(
    "svn, pce_svn, status",
    [(5, 11, "UpToDate"), (9, 12, "UpToDate"), (4, 11, "OutOfDate"), (5, 10, "OutOfDate")],
)
def test_status_is_the_first_level_the_platform_reaches(backend, svn, pce_svn, status):
    quote = parse_quote(backend.quote(bytes(64)))
    assert tcb_status(LEVELS, platform_at(svn, pce_svn), quote) == status


def test_platform_below_every_level_is_unrecognized(backend):
    quote = parse_quote(backend.quote(bytes(64)))
    assert tcb_status(LEVELS, platform_at(2, 11), quote) == UNRECOGNIZED


def test_tcb_info_of_another_platform_or_tee_is_refused(backend):
    quote = parse_quote(backend.quote(bytes(64)))
    with pytest.raises(CollateralInvalid, match="TCB info is for FMSPC 00906ED50000"):
        tcb_status(LEVELS, platform_at(5, 11, fmspc="00a06f000000"), quote)
    with pytest.raises(CollateralInvalid, match="TCB info is for TDX, the quote is SGX"):
        tcb_status({**LEVELS, "id": "TDX"}, platform_at(5, 11), quote)


def open_tcb_info(platform, collateral, now=NOW):
    return open_document(collateral.tcb_info, "tcbInfo", collateral, platform.root, now)


def test_signed_documents_open_and_altered_ones_do_not(platform):
    collateral = platform.collateral()
    body = open_tcb_info(platform, collateral)
    assert body["tcbLevels"][0]["tcbStatus"] == "UpToDate"
    altered = collateral.tcb_info.replace(b'"UpToDate"', b'"UpToDatE"')
    with pytest.raises(CollateralInvalid, match="tcbInfo signature does not verify"):
        open_tcb_info(platform, dataclasses.replace(collateral, tcb_info=altered))
    with pytest.raises(CollateralInvalid, match="no signed tcbInfo document"):
        open_document(collateral.qe_identity, "tcbInfo", collateral, platform.root, NOW)


def test_stale_collateral_is_refused(platform):
    later = NOW + datetime.timedelta(days=31)
    with pytest.raises(CollateralExpired, match="tcbInfo expired"):
        open_tcb_info(platform, platform.collateral(), later)


def test_document_signed_by_a_key_off_the_chain_is_refused(platform):
    from cryptography.hazmat.primitives.asymmetric import ec

    forged = signed_document(
        "tcbInfo", {"nextUpdate": "2099-01-01T00:00:00Z"}, ec.generate_private_key(ec.SECP256R1())
    )
    collateral = dataclasses.replace(platform.collateral(), tcb_info=forged)
    with pytest.raises(CollateralInvalid, match="signature does not verify"):
        open_tcb_info(platform, collateral)


def test_quoting_enclave_is_checked_against_its_identity(platform, backend):
    collateral = platform.collateral()
    identity = open_document(
        collateral.qe_identity, "enclaveIdentity", collateral, platform.root, NOW
    )
    qe_report = parse_quote(backend.quote(bytes(64))).signature.qe_report
    assert quoting_enclave_status(identity, qe_report) == "UpToDate"
    old = dataclasses.replace(qe_report, isv_svn=1)
    assert quoting_enclave_status(identity, old) == UNRECOGNIZED
    impostor = {**identity, "mrsigner": bytes(32).hex(), "isvprodid": 7}
    with pytest.raises(QuotingEnclaveRefused, match="MRSIGNER, ISVPRODID differ"):
        quoting_enclave_status(impostor, qe_report)


def test_collateral_json_round_trips_and_garbage_is_refused(platform):
    collateral = platform.collateral()
    assert Collateral.from_json(collateral.to_json()) == collateral
    with pytest.raises(MalformedEvidence, match="collateral does not parse"):
        Collateral.from_json({"tcb_info": "%%%"})
