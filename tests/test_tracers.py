"""Every tracer records a graph that computes the loss: make_fx (real, fake, symbolic),
torch.export and its run_decompositions(), torch.jit.script of a module holding CTCLoss.

The op's CPU host loops (ctc_ext/csrc/autograd) write results through data pointers, which a
tracer cannot see; they must stand aside while any dispatch mode is active."""

import pytest
import torch
from ctc_cases import builtin_loss, make_batch
from torch.fx.experimental.proxy_tensor import make_fx

import ctc_ext

REDUCTIONS = ["none", "mean", "sum"]


@pytest.fixture
def batch():
    return make_batch(T=10, N=3, C=5, S=4, seed=17, input_lengths=[10, 7, 9], target_lengths=[4, 2, 0])


def arguments(batch):
    return (
        batch.logits,
        batch.padded_targets,
        torch.tensor(batch.input_lengths),
        torch.tensor(batch.target_lengths),
    )


def expected(batch, reduction):
    return builtin_loss(batch.logits, batch.padded_targets, batch.input_lengths, batch.target_lengths, 0, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tracing_mode", ["real", "fake", "symbolic"])
def test_make_fx_graph_computes_the_loss(batch, tracing_mode, reduction):
    def loss(logits, targets, input_lengths, target_lengths):
        return ctc_ext.ctc_loss(logits, targets, input_lengths, target_lengths, reduction=reduction)

    graph = make_fx(loss, tracing_mode=tracing_mode)(*arguments(batch))
    # Replay on other values of the same shapes: a graph that baked in the traced results, or
    # returns uninitialised memory, fails here.
    other = make_batch(T=10, N=3, C=5, S=4, seed=18, input_lengths=[10, 7, 9], target_lengths=[4, 2, 0])
    torch.testing.assert_close(graph(*arguments(other)), expected(other, reduction))
    assert "new_empty" not in graph.code


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_make_fx_of_the_gradient(batch, reduction):
    def gradient(logits, targets, input_lengths, target_lengths):
        logits = logits.detach().requires_grad_()
        loss = ctc_ext.ctc_loss(logits, targets, input_lengths, target_lengths, reduction=reduction)
        return torch.autograd.grad(loss.sum(), logits)[0]

    graph = make_fx(gradient, tracing_mode="real")(*arguments(batch))
    other = make_batch(T=10, N=3, C=5, S=4, seed=19, input_lengths=[10, 7, 9], target_lengths=[4, 2, 0])
    logits = other.logits.clone().requires_grad_()
    builtin = builtin_loss(logits, other.padded_targets, other.input_lengths, other.target_lengths, 0, reduction)
    (reference,) = torch.autograd.grad(builtin.sum(), logits)
    torch.testing.assert_close(graph(*arguments(other)), reference)


class Trainable(torch.nn.Module):
    def __init__(self, reduction):
        super().__init__()
        self.project = torch.nn.Linear(5, 5, dtype=torch.float64)
        self.criterion = ctc_ext.CTCLoss(reduction=reduction)

    def forward(self, features, targets, input_lengths, target_lengths):
        return self.criterion(self.project(features), targets, input_lengths, target_lengths)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_export_and_run_decompositions_of_a_trainable_model(batch, reduction):
    model = Trainable(reduction)
    args = arguments(batch)
    program = torch.export.export(model, args)
    decomposed = program.run_decompositions()
    other = arguments(make_batch(T=10, N=3, C=5, S=4, seed=20, input_lengths=[10, 7, 9], target_lengths=[4, 2, 0]))
    with torch.no_grad():
        want = model(*other)
    torch.testing.assert_close(program.module()(*other), want)
    runnable = decomposed.module()
    loss = runnable(*other)
    torch.testing.assert_close(loss, want)
    # The decomposed graph trains: its parameters get the eager model's gradients.
    loss.sum().backward()
    model(*other).sum().backward()
    torch.testing.assert_close(runnable.project.weight.grad, model.project.weight.grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_jit_script_of_a_module_holding_ctc_loss(batch, reduction, batch_first):
    model = Trainable(reduction)
    model.criterion = ctc_ext.CTCLoss(reduction=reduction, batch_first=batch_first)
    scripted = torch.jit.script(model)
    features, targets, input_lengths, target_lengths = arguments(batch)
    if batch_first:
        features = features.transpose(0, 1)
    torch.testing.assert_close(
        scripted(features, targets, input_lengths, target_lengths),
        model(features, targets, input_lengths, target_lengths),
    )
    # The gradient flows through the scripted module too.
    scripted(features, targets, input_lengths, target_lengths).sum().backward()
    assert model.project.weight.grad is not None and model.project.weight.grad.abs().sum() > 0


def test_jit_script_with_list_lengths_and_unbatched_input(batch):
    criterion = torch.jit.script(ctc_ext.CTCLoss(reduction="none"))
    logits, targets = batch.logits[:, 0], batch.padded_targets[0]
    got = criterion(logits, targets, [batch.input_lengths[0]], [batch.target_lengths[0]])
    want = ctc_ext.ctc_loss(logits, targets, batch.input_lengths[0], batch.target_lengths[0], reduction="none")
    torch.testing.assert_close(got, want)
    with pytest.raises(torch.jit.Error, match="reduction must be one of"):
        torch.jit.script(ctc_ext.CTCLoss(reduction="avg"))(logits, targets, [10], [4])
