"""ARR: the vectorised update equals a plain per-sample sequential reference."""

from __future__ import annotations

import io

import pytest
import torch

from dnrt_core.mechanisms.arr import ARR


class SequentialARR:
    """The released code's semantics, one sample after another (a python loop)."""

    def __init__(self, num_classes: int, d: int, momentum: float, target: str):
        self.memory = torch.zeros(num_classes, d, dtype=torch.float64)
        self.initialized = [False] * num_classes
        self.m = momentum
        self.target = target

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Returns the loss with autograd to ``x`` (mean over labelled samples)."""
        losses = []
        for i in range(x.shape[0]):
            k = int(y[i])
            if k < 0:
                continue
            xi = x[i].detach().double()
            if not self.initialized[k]:
                before = xi.clone()  # first-seen class: "before" contributes zero
                self.memory[k] = xi
                self.initialized[k] = True
            else:
                before = self.memory[k].clone()
                self.memory[k] = (1 - self.m) * self.memory[k] + self.m * xi
            target = self.memory[k] if self.target == "after" else before
            losses.append((x[i] - target.to(x.dtype)).abs().sum() / x.shape[1])
        if not losses:
            return x.sum() * 0.0
        return torch.stack(losses).mean()


def _batches(num_classes: int, d: int, sizes, seed: int = 0, ignore: bool = True):
    g = torch.Generator().manual_seed(seed)
    out = []
    for b, n in enumerate(sizes):
        x = torch.randn(n, d, generator=g) * (1 + b)
        # few classes -> many repeats; the first batch only sees classes 0..2
        high = 3 if b == 0 else num_classes
        y = torch.randint(0, high, (n,), generator=g)
        if ignore:
            y[torch.rand(n, generator=g) < 0.2] = -1
        out.append((x, y))
    return out


@pytest.mark.parametrize("target", ["after", "before"])
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("chunk_size", [512, 5])
def test_matches_sequential_reference(target, momentum, chunk_size, path):
    K, d = 6, 7
    # one class more than the labels use: it must stay unset
    arr = ARR(K + 1, d, momentum=momentum, target=target, chunk_size=chunk_size).train()
    ref = SequentialARR(K + 1, d, momentum, target)
    batches = _batches(K, d, [12, 17, 1, 30, 9])
    labels = torch.cat([y for _, y in batches])
    assert (labels == -1).any() and len(set(labels.tolist())) == K + 1  # ignored + all classes
    for x, y in batches:
        xa = x.clone().requires_grad_(True)
        xr = x.clone().requires_grad_(True)
        loss = arr(xa, y)
        loss_ref = ref(xr, y)
        torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
        loss.backward()
        loss_ref.backward()
        torch.testing.assert_close(xa.grad, xr.grad, atol=1e-6, rtol=1e-5)
        assert torch.all(xa.grad[y < 0] == 0)  # ignored samples get no gradient
        torch.testing.assert_close(arr.memory.double(), ref.memory, atol=1e-5, rtol=1e-5)
        assert arr.initialized.tolist() == ref.initialized
    # a class never seen stays unset and zero
    assert not arr.initialized[K] and torch.all(arr.memory[K] == 0)


def test_first_seen_class_semantics_by_hand():
    """One class, three samples, m = 0.5: mu = x0, then (x0+x1)/2, then (mu+x2)/2."""
    x = torch.tensor([[2.0], [4.0], [0.0]])
    y = torch.tensor([1, 1, 1])
    after = ARR(2, 1, momentum=0.5, target="after").train()
    loss = after(x, y)
    # targets 2, 3, 1.5 -> |2-2| + |4-3| + |0-1.5| = 2.5, mean over 3
    torch.testing.assert_close(loss, torch.tensor(2.5 / 3))
    torch.testing.assert_close(after.memory, torch.tensor([[0.0], [1.5]]))
    before = ARR(2, 1, momentum=0.5, target="before").train()
    # targets: x0 itself (0), 2, 3 -> 0 + 2 + 3
    torch.testing.assert_close(before(x, y), torch.tensor(5.0 / 3))
    torch.testing.assert_close(before.memory, after.memory)
    assert before.initialized.tolist() == [False, True]


def test_batch_order_matters_within_a_class():
    x = torch.tensor([[1.0], [5.0], [2.0], [9.0]])
    y = torch.tensor([0, 1, 0, 0])
    a = ARR(2, 1, momentum=0.5).train()
    a(x, y)
    b = ARR(2, 1, momentum=0.5).train()
    b(x[[0, 3, 1, 2]], y[[0, 3, 1, 2]])
    # class 0 sees 1, 2, 9 -> 1, 1.5, 5.25 ; reordered 1, 9, 2 -> 1, 5, 3.5
    torch.testing.assert_close(a.memory[0], torch.tensor([5.25]))
    torch.testing.assert_close(b.memory[0], torch.tensor([3.5]))


def test_large_batch_many_repeats_is_stable(path):
    """Long same-class runs across several chunks (powers of (1-m) up to (1-m)^400)."""
    K, d = 3, 4
    for momentum in (0.1, 0.9):
        arr = ARR(K, d, momentum=momentum, chunk_size=400).train()
        ref = SequentialARR(K, d, momentum, "after")
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1000, d, generator=g)
        y = torch.randint(0, K, (1000,), generator=g)
        torch.testing.assert_close(arr(x, y), ref(x, y), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(arr.memory.double(), ref.memory, atol=1e-5, rtol=1e-5)
        assert torch.isfinite(arr.memory).all()


@pytest.mark.parametrize("target", ["after", "before"])
def test_update_returns_the_reference_targets(target, path):
    """update() (used under DDP) gives each sample's target in batch order; ignored rows: x."""
    K, d, m = 5, 3, 0.3
    arr = ARR(K, d, momentum=m, target=target).double().train()
    g = torch.Generator().manual_seed(3)
    for n in (9, 40):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.randint(0, K, (n,), generator=g)
        y[::4] = -100  # any negative label is ignored
        memory = arr.memory.clone()
        initialized = arr.initialized.clone()
        targets = arr.update(x, y)
        # sequential reference, one sample at a time
        for i in range(n):
            k = int(y[i])
            if k < 0:
                torch.testing.assert_close(targets[i], x[i])
                continue
            before = memory[k].clone() if initialized[k] else x[i]
            memory[k] = x[i] if not initialized[k] else (1 - m) * memory[k] + m * x[i]
            initialized[k] = True
            torch.testing.assert_close(targets[i], memory[k] if target == "after" else before)
        torch.testing.assert_close(arr.memory, memory)
        assert torch.equal(arr.initialized, initialized)


@pytest.mark.parametrize("target", ["after", "before"])
@pytest.mark.parametrize("labels", [[2] * 37, [0, 1, 2, 3], [3, -1, 3, -1, -1, 3]])
def test_one_class_and_all_distinct_batches(target, labels, path):
    """Edge cases of the grouping: a single class (one long run) and no repeats at all."""
    y = torch.tensor(labels)
    x = torch.randn(len(y), 6, generator=torch.Generator().manual_seed(4))
    for momentum in (0.1, 0.75):
        arr = ARR(4, 6, momentum=momentum, target=target).train()
        ref = SequentialARR(4, 6, momentum, target)
        for scale in (1.0, -2.0):  # a second batch: the memory is set now
            xa = (x * scale).requires_grad_(True)
            xr = (x * scale).requires_grad_(True)
            loss, loss_ref = arr(xa, y), ref(xr, y)
            torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
            loss.backward()
            loss_ref.backward()
            torch.testing.assert_close(xa.grad, xr.grad, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(arr.memory.double(), ref.memory, atol=1e-5, rtol=1e-5)


def test_empty_batch_gives_zero_loss():
    arr = ARR(3, 2).train()
    x = torch.zeros(0, 2, requires_grad=True)
    loss = arr(x, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad.shape == (0, 2)
    assert not arr.initialized.any()


def test_out_of_range_label_in_a_later_chunk_leaves_memory_unchanged():
    arr = ARR(3, 2, chunk_size=2).train()
    with pytest.raises(ValueError, match="out of range"):
        arr(torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 3]))
    assert not arr.initialized.any() and torch.all(arr.memory == 0)


def test_all_ignored_gives_zero_loss_and_no_update():
    arr = ARR(3, 2).train()
    x = torch.randn(4, 2, requires_grad=True)
    loss = arr(x, torch.full((4,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(x.grad == 0)
    assert not arr.initialized.any() and torch.all(arr.memory == 0)


def test_eval_mode_and_missing_labels_do_nothing():
    arr = ARR(3, 2).train()
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 0, 2, 1])
    arr(x, y)
    memory = arr.memory.clone()
    arr.eval()
    assert arr(x * 10, y).item() == 0.0
    torch.testing.assert_close(arr.memory, memory)
    arr.train()
    assert arr(x * 10, None).item() == 0.0
    torch.testing.assert_close(arr.memory, memory)


def test_labels_out_of_range_raise():
    arr = ARR(3, 2).train()
    with pytest.raises(ValueError, match="out of range"):
        arr(torch.randn(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        arr(torch.randn(2, 2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must have shape"):
        arr(torch.randn(2, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="momentum"):
        ARR(3, momentum=0.0)
    with pytest.raises(ValueError, match="target"):
        ARR(3, target="during")


def test_memory_state_dict_roundtrip_into_lazy_module():
    arr = ARR(4, momentum=0.3).train()  # num_features inferred from the first batch
    for x, y in _batches(4, 5, [8, 8], ignore=False):
        arr(x, y)
    assert arr.num_features == 5
    buffer = io.BytesIO()
    torch.save(arr.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = ARR(4, momentum=0.3)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.memory, arr.memory)
    assert torch.equal(fresh.initialized, arr.initialized)
    # both continue identically
    x, y = _batches(4, 5, [6], seed=9, ignore=False)[0]
    torch.testing.assert_close(fresh.train()(x, y), arr(x, y))
    torch.testing.assert_close(fresh.memory, arr.memory)


def test_memory_is_a_buffer_that_follows_dtype_moves():
    arr = ARR(3, 2)
    names = dict(arr.named_buffers())
    assert set(names) == {"memory", "initialized"}
    assert not list(arr.parameters())
    arr = arr.double().train()
    assert arr.memory.dtype == torch.float64
    arr(torch.randn(3, 2, dtype=torch.float64), torch.tensor([0, 1, 1]))
    assert arr.memory.dtype == torch.float64


def test_half_precision_input_updates_float32_memory():
    arr = ARR(2, 3).train()
    x = torch.randn(4, 3).to(torch.bfloat16).requires_grad_(True)
    loss = arr(x, torch.tensor([0, 1, 0, 1]))
    assert loss.dtype == torch.bfloat16 and arr.memory.dtype == torch.float32
    loss.backward()
    assert x.grad is not None
