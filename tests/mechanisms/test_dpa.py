"""TAU and DPA: threshold unit, interval memories, irrelevant-channel rule, channel loss."""

from __future__ import annotations

import io

import pytest
import torch

from dnrt_core.mechanisms.dpa import DPA, TAU, tau_activation


@pytest.mark.parametrize("tau", [0.0, 0.75])
def test_tau_forward_backward(tau):
    x = torch.tensor([-1.0, 0.0, 0.5, 0.75, 2.0, 3.0], requires_grad=True)
    y = TAU(tau)(x)
    expected = torch.where(x.detach() > tau, x.detach(), torch.zeros(()))
    torch.testing.assert_close(y, expected)
    g = torch.arange(1.0, 7.0)
    y.backward(g)
    # gradient passes only where x > tau, and is zero where x < tau
    torch.testing.assert_close(x.grad, torch.where(x.detach() > tau, g, torch.zeros(())))
    assert torch.all(x.grad[x.detach() < tau] == 0)
    assert torch.equal(tau_activation(x.detach(), tau), expected)


def _set_memories(dpa: DPA, fwd, bwd, initialized) -> None:
    with torch.no_grad():
        dpa.forward_memory = torch.tensor(fwd)
        dpa.backward_memory = torch.tensor(bwd)
        dpa.forward_initialized.copy_(torch.tensor(initialized))
        dpa.backward_initialized.copy_(torch.tensor(initialized))


def test_irrelevant_channel_rule_and_loss_by_hand():
    tau = 0.5
    dpa = DPA(3, tau=tau, interval=1000).train()  # no memory update during this test
    _set_memories(
        dpa,
        fwd=[[0.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]],
        bwd=[[-1.0, -1.0, 0.5, -1.0], [-0.2, -0.2, -0.2, -0.2], [-1.0, -1.0, -1.0, -1.0]],
        initialized=[True, True, False],
    )
    x = torch.tensor(
        [
            # class 0: ch0 irrelevant; ch1 value not > tau; ch2 grad sign >= 0; ch3 memory >= tau
            [2.0, 0.4, 3.0, 2.0],
            # class 1: ch0, ch1, ch3 irrelevant; ch2 equals tau (not above)
            [1.0, 1.0, 0.5, 0.6],
            # ignored label: would qualify, must not count
            [9.0, 9.0, 9.0, 9.0],
            # class 2: memories unset -> nothing
            [7.0, 7.0, 7.0, 7.0],
        ],
        requires_grad=True,
    )
    y = torch.tensor([0, 1, -1, 2])
    agg = x.detach()
    expected_mask = torch.tensor(
        [
            [True, False, False, False],
            [True, True, False, True],
            [False, False, False, False],
            [False, False, False, False],
        ]
    )
    loss = dpa.channel_loss(x, y)
    torch.testing.assert_close(loss, agg[expected_mask].pow(2).mean())
    torch.testing.assert_close(loss, torch.tensor((4.0 + 1.0 + 1.0 + 0.36) / 4))
    loss.backward()
    expected_grad = torch.where(expected_mask, 2 * agg / expected_mask.sum(), torch.zeros(()))
    torch.testing.assert_close(x.grad, expected_grad)

    # the same through the module: labels set, a training forward stores last_loss
    dpa.set_targets(y)
    out = dpa(x)
    torch.testing.assert_close(dpa.last_loss, loss)
    torch.testing.assert_close(out, TAU(tau)(x))


def test_no_irrelevant_channel_gives_zero_loss_with_graph():
    dpa = DPA(2, interval=1000).train()
    _set_memories(dpa, fwd=[[1.0, 1.0], [1.0, 1.0]], bwd=[[-1.0, -1.0]] * 2, initialized=[1, 1])
    x = torch.randn(3, 2, requires_grad=True)
    loss = dpa.channel_loss(x, torch.tensor([0, 1, 0]))
    assert loss.item() == 0.0 and loss.requires_grad


def test_memories_update_every_interval_steps_with_momentum():
    m, interval = 0.9, 3
    dpa = DPA(3, momentum=m, interval=interval).train()
    g = torch.Generator().manual_seed(0)

    def step(x, y, grad):
        x = x.clone().requires_grad_(True)
        dpa.set_targets(y)
        out = dpa(x)
        (out * grad).sum().backward()  # the gradient at the output is exactly ``grad``
        return x

    def class_mean(v, y, k):
        return v[y == k].mean(0)

    y = torch.tensor([0, 1, 0, -1, 1, 0])
    batches = [(torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)) for _ in range(6)]
    for i in range(2):  # steps 1, 2: nothing stored yet
        step(*batches[i][:1], y, batches[i][1])
        assert not dpa.forward_initialized.any() and not dpa.backward_initialized.any()
        assert torch.all(dpa.forward_memory == 0) and torch.all(dpa.backward_memory == 0)

    # step 3: the first update stores the class means (class 2 absent: stays unset)
    x3, g3 = batches[2]
    dpa.set_targets(y)
    out = dpa(x3.clone().requires_grad_(True))
    for k in (0, 1):
        torch.testing.assert_close(dpa.forward_memory[k], class_mean(x3, y, k))
    assert dpa.forward_initialized.tolist() == [True, True, False]
    assert not dpa.backward_initialized.any()  # the gradient side is filled in backward
    (out * g3).sum().backward()
    for k in (0, 1):
        torch.testing.assert_close(dpa.backward_memory[k], class_mean(torch.sign(g3), y, k))
    assert dpa.backward_initialized.tolist() == [True, True, False]
    fwd3, bwd3 = dpa.forward_memory.clone(), dpa.backward_memory.clone()

    for i in (3, 4):  # steps 4, 5: unchanged
        step(batches[i][0], y, batches[i][1])
        torch.testing.assert_close(dpa.forward_memory, fwd3)
        torch.testing.assert_close(dpa.backward_memory, bwd3)

    # step 6: mean += m·(new − mean); class 1 absent from this batch keeps its memory
    y6 = torch.tensor([0, 0, 2, -1, 2, 0])
    x6, g6 = batches[5]
    step(x6, y6, g6)
    torch.testing.assert_close(
        dpa.forward_memory[0], fwd3[0] + m * (class_mean(x6, y6, 0) - fwd3[0])
    )
    torch.testing.assert_close(
        dpa.backward_memory[0], bwd3[0] + m * (class_mean(torch.sign(g6), y6, 0) - bwd3[0])
    )
    torch.testing.assert_close(dpa.forward_memory[1], fwd3[1])
    torch.testing.assert_close(dpa.backward_memory[1], bwd3[1])
    # class 2 is seen for the first time at an update step: stored as is
    torch.testing.assert_close(dpa.forward_memory[2], class_mean(x6, y6, 2))
    torch.testing.assert_close(dpa.backward_memory[2], class_mean(torch.sign(g6), y6, 2))
    assert int(dpa.step) == 6


@pytest.mark.parametrize(
    "shape,pool_fn",
    [((4, 3, 5), lambda x: x[:, 0]), ((4, 5, 2, 3), lambda x: x.mean(dim=(2, 3)))],
    ids=["tokens", "feature-map"],
)
def test_values_are_aggregated_like_arr(shape, pool_fn):
    dpa = DPA(2, interval=1).train()
    x = torch.randn(*shape)
    y = torch.tensor([0, 1, 1, 0])
    dpa.set_targets(y)
    out = dpa(x.clone().requires_grad_(True))
    assert out.shape == x.shape
    agg = pool_fn(x)
    torch.testing.assert_close(dpa.forward_memory[1], agg[y == 1].mean(0))
    grad = torch.randn(*shape)
    (out * grad).sum().backward()
    torch.testing.assert_close(dpa.backward_memory[0], torch.sign(pool_fn(grad))[y == 0].mean(0))


def test_eval_mode_is_plain_tau_and_does_not_count_steps():
    dpa = DPA(2, tau=0.1, interval=1).eval()
    dpa.set_targets(torch.tensor([0, 1]))
    x = torch.randn(2, 3)
    torch.testing.assert_close(dpa(x), TAU(0.1)(x))
    assert dpa.last_loss is None and int(dpa.step) == 0
    assert not dpa.forward_initialized.any()


def test_state_dict_roundtrip_and_label_check():
    dpa = DPA(3, interval=1).train()
    for seed in range(3):
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        dpa.set_targets(torch.tensor([0, 1, 2, 1, 0]))
        dpa(x).sum().backward()
    buffer = io.BytesIO()
    torch.save(dpa.state_dict(), buffer)
    buffer.seek(0)
    fresh = DPA(3, interval=1)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for name in ("forward_memory", "backward_memory", "forward_initialized",
                 "backward_initialized", "step"):  # fmt: skip
        assert torch.equal(getattr(fresh, name), getattr(dpa, name)), name
    assert int(fresh.step) == 3
    dpa.set_targets(torch.tensor([0, 5, 1, 1, 1]))
    with pytest.raises(ValueError, match="out of range"):
        dpa(torch.randn(5, 4))
    with pytest.raises(ValueError, match="interval"):
        DPA(3, interval=0)
