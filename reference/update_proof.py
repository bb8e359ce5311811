"""One update through every fast path and population engine, compared with network.py's reference update.

The contract of every faster path (manual_backprop.fast, manual_backprop.population): from the same parameters on
the same samples, one update equals the reference's ``loss_and_gradients`` + ``update``, bit for bit where the same
operations run, else within the path's stated bound in ulps. tests/proof/test_update_proof.py runs it over every
activation x loss; ``manual-backprop check --paths all`` runs it on the user's own machine and device. The paths:
the fused step (keeping its gradients, and with the step fused in), the C loop's one-epoch call, the narrow kernel,
the CUDA-graph runner, MLP.loss_and_grads' one C call (fast/one_update.py), the Trainer's several-epochs C call (fast/epochs.py: one batch-mode epoch, one update), and
the population's engines (one member of a Population; the C engine learns online, so its update is one sample's).

A bound of u ulps means, for each tensor compared (loss, every gradient, every parameter after the update):
max |fast - reference| <= u * eps * scale, with the scale from the absolute-value network (the same network run
on magnitudes |x|, |W|, |b| with every f and f' at its bound 1): forward magnitudes F_0 = |x^0|,
F_{k+1} = F_k |W[k]|^T + |b[k]|; backward magnitudes G_L = |dE/dx^L| plus its change per unit change of x^L times
F_L, G_{k-1} = G_k |W[k]|. dE/dW[k] is measured against the largest entry of G_k^T F_k, dE/db[k] against sum G_k,
a parameter against the larger of its largest entry and lr times its gradient's scale, the loss against its
magnitude plus sum G_L F_L. Cancellation cannot shrink this scale, and near saturation it is honest: two correct
implementations of f may differ by one ulp in x = f(net), and f' read off x then has an absolute, not a relative,
accuracy of about eps. Formula drift (a different f' formula) is caught where it shows, kernel by kernel on the
reference's own inputs (tests/proof/test_update_proof.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from manual_backprop import fast
from manual_backprop.fast import narrow
from manual_backprop.datasets import Dataset
from manual_backprop.network import MLP, Gradients, loss_and_gradients, update
from manual_backprop.population import POPULATION_ULPS, Population, PopulationTrainer
from manual_backprop.population.c_engine import POPULATION_C_ULPS, load_population_kernel, population_c_unsupported
from manual_backprop.training import Trainer

__all__ = ["reference_update", "ulps", "update_misses", "PATHS", "paths_for", "path_samples", "path_update",
           "population_updates", "prove_population", "prove_path", "prove_paths"]

PATHS = ("fused-exact", "fused", "c", "epochs", "one-update", "narrow", "cuda_graph", "population-api", "population-eager",
         "population-compiled", "population-cuda_graph", "population-c")


def named(loss: Tensor, grads, params) -> dict:
    """{"loss", "dW[k]", "db[k]", "param[i]"}: what one update produced (grads may be None)."""
    out = {"loss": loss.reshape(()).detach()}
    if grads is not None:
        out.update({f"dW[{k}]": g for k, g in enumerate(grads.weights)})
        out.update({f"db[{k}]": g for k, g in enumerate(grads.biases)})
    out.update({f"param[{k}]": p for k, p in enumerate(params)})
    return out


@torch.no_grad()
def reference_update(net: MLP, x: Tensor, y: Tensor, loss_fn, lr: float):
    """One update through network.py on a copy of net: (named results, scales of the absolute-value network)."""
    ref = net.copy()
    cache = ref.forward_cache(x)
    loss, grads = loss_and_gradients(ref, x, y, loss_fn)
    F = [x.abs()]
    for k in range(ref.num_layers):
        F.append(F[-1] @ ref.weights[k].abs().t() + (ref.biases[k].abs() if ref.bias else 0.0))
    c = loss_fn.scale(*cache.output.shape)
    if loss_fn.name == "squared_error":
        g = 2.0 * c * ((cache.output - y).abs() + F[-1])
        G = 2.0 * g.max(dim=1, keepdim=True).values.expand_as(g)  # |J^T g| <= 2 max |g| for softmax too
    else:
        G = c * (cache.output.abs() + y.abs() + F[-1])  # the fused delta c (x - y)
    scales = {"loss": loss.abs().item() + (G * F[-1]).sum().item()}
    for k in range(ref.num_layers - 1, -1, -1):
        scales[f"dW[{k}]"] = (G.t() @ F[k]).max().item()
        scales[f"db[{k}]"] = G.sum(0).max().item()
        G = G @ ref.weights[k].abs()
    update(ref.weights, ref.biases, grads, lr)
    for k, p in enumerate(ref.parameters()):
        grad = f"dW[{k // 2}]" if p.dim() == 2 else f"db[{k // 2}]"
        scales[f"param[{k}]"] = max(p.abs().max().item(), lr * scales[grad])
    return named(loss, grads, ref.parameters()), scales


def ulps(got: Tensor, ref: Tensor, scale: float) -> float:
    """max |got - ref| in units of eps * scale (0 when equal; inf when the scale is 0 and they differ)."""
    diff = (got.to(ref.device) - ref).abs().max().item() if ref.numel() else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / (torch.finfo(ref.dtype).eps * scale)


def update_misses(got: dict, ref: dict, scales: dict, bound: int) -> list:
    """[(name, ulps, ok)] for every tensor the path produced; bound 0 asks for bit-equality."""
    rows = []
    for name, r in ref.items():
        if name not in got:
            continue
        g = got[name].to(r.device)
        if g.shape != r.shape or g.dtype != r.dtype:
            rows.append((name, float("inf"), False))
            continue
        miss = ulps(g, r, scales[name])
        rows.append((name, miss, torch.equal(g, r) if bound == 0 else miss <= bound))
    return rows


def paths_for(device: torch.device, *, compiled: bool = True) -> list:
    """The paths that run on this device (the C loop where a compiler works, CUDA graphs on CUDA)."""
    paths = ["fused-exact", "fused", "population-api", "population-eager"]
    if device.type == "cpu":
        try:
            fast.load_kernel()
            paths += ["c", "epochs", "one-update"]
        except fast.FastPathUnavailable:
            pass
        try:
            load_population_kernel()
            paths.append("population-c")
        except fast.FastPathUnavailable:
            pass
    if device.type == "cuda":
        paths += ["cuda_graph", "population-cuda_graph"]
    if compiled:
        paths.append("population-compiled")
    return paths


def path_samples(path: str, x: Tensor, y: Tensor) -> tuple:
    """(x, y) of the path's one update: the population's C engine learns online (one update is one sample, the
    first); every other path makes one update on the whole batch."""
    return (x[:1], y[:1]) if path == "population-c" else (x, y)


def _one_batch(x: Tensor, y: Tensor, loss_fn, n_out: int) -> Dataset:
    """The samples as a Dataset that trains and tests on them (cross-entropy's one-hot rows as class labels)."""
    classes = loss_fn.name == "cross_entropy"
    labels = y.argmax(dim=1) if classes else y
    return Dataset("one-batch", x, labels, x, labels, n_out if classes else None)


def path_update(path: str, net: MLP, x: Tensor, y: Tensor, loss_fn, lr: float):
    """One update of a copy of ``net`` through ``path``: ({name: tensor}, the path's bound in ulps)."""
    net = net.copy()
    if path in ("fused-exact", "fused"):
        step = fast.FusedStep(net, loss_fn, x.shape[0], keep_grads=path == "fused-exact")
        loss = torch.zeros((), dtype=net.dtype, device=net.device)
        with torch.no_grad():
            step.update(x, y, None, lr, loss)
        return named(loss, step.grads, net.parameters()), (0 if path == "fused-exact" else fast.FUSED_ULPS)
    if path == "c":
        grads = Gradients([torch.zeros_like(w) for w in net.weights], [torch.zeros_like(b) for b in net.biases])
        B = x.shape[0]
        losses = fast.CKernel(net, loss_fn).run(x.contiguous(), y.contiguous(), torch.arange(B),
                                                torch.tensor([0, B]), lr, grads=grads)
        return named(losses[0], grads, net.parameters()), fast.C_ULPS
    if path == "narrow":  # the kernel's pass, then network.update on its gradients
        loss, grads = narrow.NarrowKernel(net, loss_fn).loss_and_gradients(x, y)
        update(net.weights, net.biases, grads, lr)
        return named(loss, grads, net.parameters()), narrow.NARROW_ULPS
    if path == "epochs":
        return _epochs_update(net, x, y, loss_fn, lr), fast.C_ULPS
    if path == "one-update":  # the C call MLP.loss_and_grads asks first, then network.update on its gradients
        from manual_backprop.fast import one_update

        got = one_update.loss_and_gradients(net, x, net.check_y(y, (x.shape[0], net.sizes[-1]), loss_fn), loss_fn)
        if got is None:
            raise fast.FastPathUnavailable(one_update.unavailable or "the one-update C call does not take this "
                                           "network, loss or batch (network.py runs instead)")
        loss, grads = got
        update(net.weights, net.biases, grads, lr)
        return named(loss, grads, net.parameters()), one_update.ONE_UPDATE_ULPS
    if path == "cuda_graph":
        B = x.shape[0]
        runner = fast.CudaGraphRunner(net, loss_fn, B, chunk=1, keep_grads=True)
        losses = torch.zeros(1, dtype=net.dtype, device=net.device)
        with torch.no_grad():
            runner.run(x, y, torch.arange(B, device=net.device), [0, B], lr, losses)
        if runner.captures != 1:
            raise AssertionError("the CUDA-graph update did not go through a captured graph")
        return named(losses[0], runner.grads, net.parameters()), 0
    if path.startswith("population-"):
        engine = path.split("-", 1)[1]
        pop = Population(net.sizes, activation=net.activation_functions[:-1], output_activation=net.output_activation,
                         bias=net.bias, seeds=[0, 1], dtype=net.dtype, device=net.device)
        for stack, own in zip(pop.parameters(), net.parameters()):
            stack.copy_(own.unsqueeze(0).expand_as(stack))  # [net, net]: K = 2 runs the batched kernels
        bound = POPULATION_C_ULPS if engine == "c" else POPULATION_ULPS
        return population_updates(engine, pop, x, y, loss_fn, lr)[0], bound
    raise ValueError(f"path must be one of {list(PATHS)}, but got {path!r}")


def _epochs_update(net: MLP, x: Tensor, y: Tensor, loss_fn, lr: float) -> dict:
    """One batch-mode epoch (one update, the samples in their stored order) of a Trainer through the C loop's
    several-epochs call; its gradients (kept) and parameters. The call's update losses stay inside it (the Trainer
    records the evaluations), so the loss is not compared here."""
    reason = fast.c_unsupported(net, loss_fn)
    if reason is not None:
        raise fast.FastPathUnavailable(reason)
    trainer = Trainer(net, _one_batch(x, y, loss_fn, net.sizes[-1]), mode="batch", lr=lr, epochs=1, loss_fn=loss_fn,
                      fast="c", progress=False)
    runner = trainer._fast_runner
    if runner is None or runner.path != "c":
        raise fast.FastPathUnavailable("the Trainer did not take the C loop for this network")
    runner.keep_grads = True
    chunks = runner.epoch_chunks()
    trainer.run()
    if chunks._per_epoch is None or trainer.history.updates[-1] != 1 or trainer.history.stop_reason == "diverged":
        raise AssertionError("epochs: expected one finite update through the several-epochs C call")
    results = named(torch.zeros(()), trainer.last_grads, net.parameters())
    del results["loss"]
    return results


def population_updates(engine: str, pop: Population, x: Tensor, y: Tensor, loss_fn, lr) -> list:
    """Each member's results after one update of ``pop`` through ``engine`` (in place): [{name: tensor}] in member
    order. "api": Population.loss_and_grads + step (gradients too); the trainer's engines: one batch-mode epoch on
    the samples in their stored order, or for "c" (online only) one online epoch of one sample. The update's loss
    is the epoch-0 record: the same samples through the engine's forward phase, before the step."""
    if engine == "api":
        with torch.no_grad():
            losses, grads = pop.loss_and_grads(x, y, loss_fn)
        pop.step(grads, lr)
        return [named(losses[i], Gradients([g[i] for g in grads.weights], [g[i] for g in grads.biases]),
                      [p[i] for p in pop.parameters()]) for i in range(pop.size)]
    mode = "batch"
    if engine == "c":
        if x.shape[0] != 1:
            raise ValueError(f"the population's C engine learns online: one update is one sample, not {x.shape[0]}")
        reason = population_c_unsupported(pop, loss_fn, "online", False, None, 1)
        if reason is not None:
            raise fast.FastPathUnavailable(reason)
        mode = "online"
    trainer = PopulationTrainer(pop, _one_batch(x, y, loss_fn, pop.sizes[-1]), mode=mode, lr=lr, epochs=1,
                                loss_fn=loss_fn, engine=engine)
    if trainer.engine != engine:
        raise AssertionError(f"population {engine}: the trainer took the {trainer.engine!r} engine")
    trainer.run()
    if trainer.history.updates[-1] != 1 or any(trainer.history.diverged()):
        raise AssertionError(f"population {engine}: expected one finite update")
    return [named(trainer.history.train_loss[0][i].to(pop.dtype), None, [p[i] for p in pop.parameters()])
            for i in range(pop.size)]


def prove_population(engine: str, pop: Population, x: Tensor, y: Tensor, loss_fn, lr) -> tuple:
    """(bound, [[(name, ulps, ok)] for each member]): one update of ``pop`` through ``engine`` against each member's
    own reference update, on the population's device; ``lr`` one number or, for the trainer's engines, one per
    member."""
    lrs = list(lr) if isinstance(lr, (list, tuple)) else [lr] * pop.size
    refs = [reference_update(pop.member(i), x, y, loss_fn, lrs[i]) for i in range(pop.size)]
    gots = population_updates(engine, pop, x, y, loss_fn, lr)
    bound = POPULATION_C_ULPS if engine == "c" else POPULATION_ULPS
    return bound, [update_misses(got, ref, scales, bound) for got, (ref, scales) in zip(gots, refs)]


def prove_path(path: str, net: MLP, x: Tensor, y: Tensor, loss_fn, lr: float) -> tuple:
    """(bound, [(name, ulps, ok)]): one update through ``path`` against the reference's on the path's samples
    (path_samples). Raises FastPathUnavailable where the path does not take this network, loss or dtype."""
    x, y = path_samples(path, x, y)
    got, bound = path_update(path, net, x, y, loss_fn, lr)
    ref, scales = reference_update(net, x, y, loss_fn, lr)
    return bound, update_misses(got, ref, scales, bound)


def prove_paths(net: MLP, x: Tensor, y: Tensor, loss_fn, lr: float, paths) -> list:
    """[(path, bound, [(name, ulps, ok)])] for each path: one update through it against the reference's; a path
    that does not take this case is (path, None, why)."""
    out = []
    for path in paths:
        try:
            out.append((path, *prove_path(path, net, x, y, loss_fn, lr)))
        except fast.FastPathUnavailable as err:
            out.append((path, None, str(err)))
    return out
