"""TAU and DPA against a plain per-sample reference of the released semantics."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from dnrt_core import tune
from dnrt_core.mechanisms.dpa import DPA, TAU, channel_loss, tau_activation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("tau", [0.0, 0.75])
def test_tau_passes_where_x_reaches_tau(tau, dtype):
    x = torch.tensor([-1.0, -0.0, 0.0, 0.5, 0.75, 2.0, 3.0], dtype=dtype, requires_grad=True)
    y = TAU(tau)(x)
    keep = x.detach() >= tau  # x == tau is kept, and its gradient passes
    torch.testing.assert_close(y, torch.where(keep, x.detach(), torch.zeros((), dtype=dtype)))
    g = torch.arange(1.0, 8.0, dtype=dtype)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(keep, g, torch.zeros((), dtype=dtype)))
    assert torch.equal(tau_activation(x.detach(), tau), y.detach())


class ReleasedDPA:
    """The released semantics written out sample by sample (python loops, no vectorisation)."""

    def __init__(self, num_classes: int, d: int, tau: float, momentum: float, interval: int):
        self.fwd = torch.zeros(num_classes, d)
        self.bwd = torch.zeros(num_classes, d)
        self.tau, self.m, self.interval = tau, momentum, interval
        self.count = 0

    def forward(self, values: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The irrelevant-channel mask (B, d) of one labelled training forward."""
        self.count = (self.count + 1) % self.interval
        update = self.count == 0
        mask = torch.zeros(values.shape, dtype=torch.bool)
        for i, k in enumerate(y.tolist()):
            if k < 0:
                continue
            if update:
                self.fwd[k] += self.m * (values[i] - self.fwd[k])
            mask[i] = (self.fwd[k] < self.tau) & (values[i] > self.tau) & (self.bwd[k] < 0)
        return mask, update

    def backward(self, grads: torch.Tensor, y: torch.Tensor) -> None:
        """The backward memory update of an update step from the aggregated gradients."""
        for i, k in enumerate(y.tolist()):
            if k >= 0:
                sign = torch.where(grads[i] > 0, 1.0, -1.0)
                self.bwd[k] += self.m * (sign - self.bwd[k])


POOLS = {
    "token": ((5,), lambda t: t[:, 0]),  # (B, T, d): class token
    "avg": ((2, 3), lambda t: t.mean(dim=(2, 3))),  # (B, d, H, W): spatial mean
}


def _batch(b: int, n: int, shape: tuple, pool: str, num_classes: int, g: torch.Generator):
    d = 6
    full = (n, *shape, d) if pool == "token" else (n, d, *shape)
    x = torch.randn(*full, generator=g) * 0.5 + 0.1
    # the first batches only see classes 0..1; later ones add first-seen classes, repeats
    # and ignored labels (-1)
    y = torch.randint(0, 2 if b < 2 else num_classes, (n,), generator=g)
    y[torch.rand(n, generator=g) < 0.15] = -1
    grad = torch.randn(*full, generator=g)
    # exact zero gradients on some channels (e.g. drop-path): they count as -1
    zero = torch.rand(n, d, generator=g) < 0.3
    if pool == "token":
        grad[:, 0][zero] = 0.0
    else:
        grad[zero] = 0.0
    return x, y, grad


@pytest.mark.parametrize("pool", sorted(POOLS))
@pytest.mark.parametrize("tau", [0.0, 0.2])
def test_matches_per_sample_reference(pool, tau, path):
    K, interval, m = 5, 2, 0.9
    shape, agg = POOLS[pool]
    dpa = DPA(K, tau=tau, momentum=m, interval=interval, pool=pool).train()
    ref = ReleasedDPA(K, 6, tau, m, interval)
    g = torch.Generator().manual_seed(0)
    updates, zeros_seen = [], False
    for b, n in enumerate([7, 12, 5, 16, 9, 11, 40, 8]):  # 40: runs longer than the rank loop
        x, y, grad = _batch(b, n, shape, pool, K, g)
        xr = x.clone().requires_grad_(True)
        dpa.set_targets(y)
        out = dpa(xr)
        mask, update = ref.forward(agg(x), y)
        updates.append(update)
        torch.testing.assert_close(dpa.forward_memory, ref.fwd, rtol=0, atol=1e-6)
        expected = agg(x)[mask]
        torch.testing.assert_close(dpa.last_selected, expected, rtol=0, atol=0)
        loss = channel_loss([dpa.last_selected])
        torch.testing.assert_close(
            loss, expected.square().mean() if mask.any() else torch.zeros(())
        )
        ((out * grad).sum() + loss).backward()
        if update:
            ref.backward(agg(grad), y)
            zeros_seen |= bool((agg(grad)[y >= 0] == 0).any())
        torch.testing.assert_close(dpa.backward_memory, ref.bwd, rtol=0, atol=1e-6)
        # the input gradient: TAU's (where x >= tau) plus the channel loss's 2v/N
        xe = x.clone().requires_grad_(True)
        ref_loss = agg(xe)[mask].square().mean() if mask.any() else xe.sum() * 0
        ((torch.where(xe >= tau, xe, 0.0) * grad).sum() + ref_loss).backward()
        torch.testing.assert_close(xr.grad, xe.grad)
    assert updates == [False, True] * 4
    assert int(dpa.step) == 8
    assert zeros_seen  # exact zero gradients reached the backward memory (as -1)


def test_first_update_stores_momentum_times_value_and_reads_after_own_update():
    dpa = DPA(2, momentum=0.9, interval=1).train()
    dpa.backward_memory.fill_(-1.0)  # every memorised sign negative
    x = torch.tensor([[1.0, -1.0], [-2.0, 2.0], [3.0, 0.5]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    dpa.set_targets(y)
    dpa(x)
    # class 0: 0.9·[1,-1], then += 0.9·([-2,2] - that); class 1: 0.9·[3, .5]
    first = torch.tensor([0.9, -0.9])
    second = first + 0.9 * (torch.tensor([-2.0, 2.0]) - first)
    torch.testing.assert_close(dpa.forward_memory, torch.stack([second, 0.9 * x[2].detach()]))
    # sample 1 reads the memory after its own update ([-1.71, 1.71]): channel 1 is > 0 there,
    # so nothing of sample 1 is irrelevant; sample 0 read [0.9, -0.9]: channel 1 has
    # value -1 (not above tau): nothing either
    assert dpa.last_selected.numel() == 0
    assert channel_loss([dpa.last_selected]).item() == 0.0


def test_no_selection_before_the_first_update():
    dpa = DPA(3, tau=0.5, interval=5).train()  # zero memories: memorised sign 0 is not < 0
    for _ in range(4):
        dpa.set_targets(torch.tensor([0, 1, 2]))
        dpa((torch.randn(3, 4).abs() + 1.0).requires_grad_(True)).sum().backward()
        assert dpa.last_selected.numel() == 0 and dpa.last_loss.item() == 0.0
    assert torch.all(dpa.forward_memory == 0) and torch.all(dpa.backward_memory == 0)


def test_counter_counts_labelled_forwards_in_eval_mode_as_released():
    dpa = DPA(2, tau=0.1, interval=3)
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 1, 0])
    dpa.eval().set_targets(y)
    for _ in range(2):  # eval: TAU only, memories untouched, but the counter advances
        torch.testing.assert_close(dpa(x), TAU(0.1)(x))
        assert dpa.last_selected is None
    dpa.set_targets(None)
    dpa(x)  # no labels: not counted
    assert int(dpa.step) == 2
    dpa.train().set_targets(y)
    dpa(x.clone().requires_grad_(True))  # the 3rd labelled forward: an update step
    assert int(dpa.step) == 3 and (dpa.forward_memory != 0).any()
    quiet = DPA(2, interval=1, count_eval=False).eval()
    quiet.set_targets(y)
    quiet(x)
    assert int(quiet.step) == 0


def test_channel_loss_is_one_mean_over_all_sites():
    a, b = torch.tensor([2.0]), torch.tensor([1.0, 1.0, 1.0])
    torch.testing.assert_close(channel_loss([a, b]), torch.tensor(7.0 / 4))  # not (4 + 1) / 2
    assert channel_loss([torch.zeros(0), None]).item() == 0.0
    assert channel_loss([None, None]) is None


def test_tuned_aux_loss_concatenates_the_sites():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    tuned = tune(model, act="dpa", dpa={"dpa_lambda": 3.0, "interval": 1}, num_classes=3).train()
    for _ in range(3):
        x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
        out = tuned(x, targets=y)
        (out.sum() + tuned.aux_loss()).backward()
    sites = tuned.dpa_modules()
    selected = [s.last_selected for s in sites]
    assert len(sites) == 2 and all(v.numel() for v in selected)
    torch.testing.assert_close(tuned.aux_loss(), 3.0 * torch.cat(selected).square().mean())
    tuned(x)  # an unlabelled forward clears the selections
    assert all(s.last_selected is None for s in sites) and tuned.aux_loss().item() == 0.0


def test_state_dict_roundtrip_old_keys_and_label_check():
    dpa = DPA(3, interval=1).train()
    for seed in range(3):
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        dpa.set_targets(torch.tensor([0, 1, 2, 1, 0]))
        dpa(x).sum().backward()
    state = dpa.state_dict()
    assert sorted(state) == ["backward_memory", "forward_memory", "step"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = DPA(3, interval=1)  # lazy: sized by the load
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for name in state:
        assert torch.equal(getattr(fresh, name), getattr(dpa, name)), name
    # a checkpoint of the first-update-stores version also has *_initialized flags
    old = {**state, "forward_initialized": torch.ones(3, dtype=torch.bool),
           "backward_initialized": torch.ones(3, dtype=torch.bool)}  # fmt: skip
    DPA(3).load_state_dict(old)
    dpa.set_targets(torch.tensor([0, 5, 1, 1, 1]))
    with pytest.raises(ValueError, match="out of range"):
        dpa(torch.randn(5, 4))
    with pytest.raises(ValueError, match="interval"):
        DPA(3, interval=0)
