"""torch.compile: a whole training step compiles with fullgraph=True, matches eager, and does
not recompile when T or N change."""

import copy

import pytest
import torch
import torch._dynamo.testing

import ctc_ext

NUM_CLASSES = 9


def make_model(device, seed=70):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.Tanh(), torch.nn.Linear(24, NUM_CLASSES))
    return model.to(device)


def make_inputs(T, N, seed, device):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(T, N, 16, generator=generator)
    targets = torch.randint(1, NUM_CLASSES, (N, 5), generator=generator)
    input_lengths = torch.randint(T - 5, T + 1, (N,), generator=generator)
    target_lengths = torch.randint(1, 6, (N,), generator=generator)
    return tuple(tensor.to(device) for tensor in (features, targets, input_lengths, target_lengths))


def training_step(model, features, targets, input_lengths, target_lengths):
    """Forward, ctc_ext loss, backward and a plain SGD update (torch.optim's step always graph-breaks)."""
    loss = ctc_ext.ctc_loss(model(features), targets, input_lengths, target_lengths)
    loss.backward()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.sub_(0.1 * parameter.grad)
            parameter.grad = None
    return loss.detach()


@pytest.fixture
def trace_backward():
    previous = torch._dynamo.config.trace_autograd_ops
    torch._dynamo.config.trace_autograd_ops = True  # lets fullgraph=True include loss.backward()
    torch._dynamo.reset()
    yield
    torch._dynamo.config.trace_autograd_ops = previous
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_training_step_matches_eager_without_recompiling(trace_backward, backend, device):
    eager_model = make_model(device)
    compiled_model = copy.deepcopy(eager_model)
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled_step = torch.compile(training_step, backend=counter, fullgraph=True, dynamic=True)
    shapes = [(30, 4), (41, 4), (35, 6), (52, 3)] if backend == "aot_eager" else [(30, 4), (41, 3)]
    for step, (T, N) in enumerate(shapes):
        inputs = make_inputs(T, N, seed=step, device=device)
        eager_loss = training_step(eager_model, *inputs)
        compiled_loss = compiled_step(compiled_model, *inputs)
        torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
        for eager_parameter, compiled_parameter in zip(eager_model.parameters(), compiled_model.parameters()):
            torch.testing.assert_close(compiled_parameter, eager_parameter, rtol=1e-5, atol=1e-6)
    assert counter.frame_count == 1, f"compiled {counter.frame_count} times for {len(shapes)} shapes"


def test_compiled_loss_with_torch_optimizer(trace_backward, device):
    """The common recipe: compile model + loss (fullgraph), backward and optimizer step outside."""
    model = make_model(device, seed=71)
    reference = copy.deepcopy(model)

    def loss_fn(net, features, targets, input_lengths, target_lengths):
        return ctc_ext.ctc_loss(net(features), targets, input_lengths, target_lengths, batch_first=False)

    compiled_loss_fn = torch.compile(loss_fn, backend="aot_eager", fullgraph=True, dynamic=True)
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (model, reference)]
    for step, (T, N) in enumerate([(25, 3), (33, 5), (28, 2)]):
        inputs = make_inputs(T, N, seed=10 + step, device=device)
        for net, function, optimizer in ((model, compiled_loss_fn, optimizers[0]), (reference, loss_fn, optimizers[1])):
            optimizer.zero_grad()
            function(net, *inputs).backward()
            optimizer.step()
        for a, b in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
