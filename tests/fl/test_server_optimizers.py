import math

import pytest
import torch

from veil.errors import ConfigError
from veil.fl.server_optimizers import build_server_optimizer, fedadam, fedavg, fedavgm, fedyogi


def p(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor([value])}


def test_fedavg_moves_by_rate_times_delta():
    opt = fedavg(lr=0.5)
    params, _ = opt.update(p(1.0), p(2.0), opt.init(p(1.0)))
    assert params["w"].item() == 2.0


def test_fedavgm_accumulates_momentum():
    opt = fedavgm(lr=1.0, momentum=0.5)
    state = opt.init(p(0.0))
    params, state = opt.update(p(0.0), p(1.0), state)  # m = 1
    params, state = opt.update(params, p(1.0), state)  # m = 1.5
    assert params["w"].item() == 2.5 and state["w"].item() == 1.5


def test_fedadam_one_step_by_hand():
    lr, b1, b2, tau, d = 0.1, 0.9, 0.99, 1e-3, 0.2
    opt = fedadam(lr=lr, beta1=b1, beta2=b2, tau=tau)
    params, (_, v) = opt.update(p(1.0), p(d), opt.init(p(1.0)))
    m_ref = (1 - b1) * d
    v_ref = b2 * tau**2 + (1 - b2) * d * d
    assert math.isclose(params["w"].item(), 1 + lr * m_ref / (math.sqrt(v_ref) + tau), rel_tol=1e-6)
    assert math.isclose(v["w"].item(), v_ref, rel_tol=1e-6)


def test_fedadam_accumulates_first_moment_over_two_steps():
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    opt = fedadam(lr=lr, beta1=b1, beta2=b2, tau=tau)
    params, state = opt.update(p(0.0), p(0.2), opt.init(p(0.0)))
    params, (m, v) = opt.update(params, p(-0.1), state)
    m_ref = b1 * (1 - b1) * 0.2 + (1 - b1) * -0.1
    v_ref = b2 * (b2 * tau**2 + (1 - b2) * 0.04) + (1 - b2) * 0.01
    assert math.isclose(m["w"].item(), m_ref, rel_tol=1e-6)
    assert math.isclose(v["w"].item(), v_ref, rel_tol=1e-6)


def test_fedyogi_shrinks_v_when_it_exceeds_the_squared_update():
    b2, tau = 0.5, 1.0
    opt = fedyogi(lr=0.1, beta2=b2, tau=tau)
    _, (_, v) = opt.update(p(0.0), p(0.1), opt.init(p(0.0)))
    # v0 = τ² = 1 > d² = 0.01: sign +1, so v = 1 - (1-β₂)·0.01.
    assert math.isclose(v["w"].item(), 1 - 0.5 * 0.01, rel_tol=1e-6)


def test_fedyogi_second_moment_is_sign_controlled():
    b2, tau, d = 0.99, 1e-3, 0.2
    opt = fedyogi(lr=0.1, beta2=b2, tau=tau)
    _, (_, v) = opt.update(p(0.0), p(d), opt.init(p(0.0)))
    # v0 = τ² < d², so sign(v0 - d²) = -1 and v grows additively: v = τ² + (1-β₂) d².
    assert math.isclose(v["w"].item(), tau**2 + (1 - b2) * d * d, rel_tol=1e-6)


def test_build_by_name_and_errors():
    assert build_server_optimizer("fedyogi", lr=0.1).init(p(0.0)) is not None
    with pytest.raises(ConfigError, match=r"server.optimizer must be one of .*'sgd'"):
        build_server_optimizer("sgd")
    with pytest.raises(ConfigError, match=r"server.lr must be > 0 \(got 0\)"):
        fedavg(lr=0)
    with pytest.raises(ConfigError, match=r"server.momentum must be in \[0, 1\) \(got 1\)"):
        fedavgm(momentum=1)
    with pytest.raises(ConfigError, match=r"server.tau must be > 0"):
        fedadam(tau=0)
    with pytest.raises(ConfigError, match=r"server.beta1 must be in \[0, 1\) \(got 1\)"):
        fedyogi(beta1=1)
    with pytest.raises(ConfigError, match=r"server.beta2 must be in \[0, 1\) \(got -0.1\)"):
        fedadam(beta2=-0.1)
    with pytest.raises(ConfigError, match=r"server.lr must be > 0 \(got -1\)"):
        fedadam(lr=-1)
    with pytest.raises(
        ConfigError, match=r"'fedavg' takes \['lr'\] \(got unknown \['momentum'\]\)"
    ):
        build_server_optimizer("fedavg", momentum=0.5)
