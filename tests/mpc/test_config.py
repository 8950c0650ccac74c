import pytest
from pydantic import ValidationError

from veil.mpc.config import MpcConfig


def test_defaults_are_two_hospitals_with_dealer_triples():
    config = MpcConfig()
    assert (config.parties, config.split, config.model, config.sigmoid) == (
        2,
        "rows",
        "logistic",
        "piecewise",
    )
    assert config.triple_source == "dealer" and config.release == "model"
    assert MpcConfig(triples="paillier").triple_source == "paillier"
    assert MpcConfig(sigmoid="polynomial").sigmoid == "polynomial"


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"parties": 3, "triples": "dealer"}, "3 parties need no Beaver triples"),
        ({"paillier_bits": 2048}, "below 128-bit security"),
        ({"hidden": 4}, "hidden applies only to model mlp"),
        ({"parties": 4}, "less than or equal to 3"),
        ({"fractional_bits": 19}, "less than or equal to 18"),
        ({"rounds": 3}, "Extra inputs are not permitted"),
    ],
)
def test_inconsistent_settings_are_refused(settings, message):
    with pytest.raises(ValidationError, match=message):
        MpcConfig(**settings)
