from veil.claims import privacy_claim
from veil.config import parse_config


def test_claim_without_privacy_links_says_there_is_no_guarantee():
    claim = privacy_claim(parse_config({"server": {"optimizer": "fedadam"}}), 7)
    assert claim.startswith("No formal privacy guarantee")
    assert "7 clients" in claim and "fedadam" in claim and "in the clear" in claim
