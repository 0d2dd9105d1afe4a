"""Tests of the contrastive loss: hand-computed values, masking, and 2-process gather equivalence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cardiacnets.losses import ClipLoss, symmetric_info_nce


def _ce(logits_row: list[float], target: int) -> float:
    return -logits_row[target] + math.log(sum(math.exp(v) for v in logits_row))


def test_info_nce_hand_computed():
    query = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    key = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # query @ key.T = [[1, 0], [0.6, 0.8]]; key @ query.T = [[1, 0.6], [0, 0.8]]; scale 10.
    q_to_k = (_ce([10.0, 0.0], 0) + _ce([6.0, 8.0], 1)) / 2
    k_to_q = (_ce([10.0, 6.0], 0) + _ce([0.0, 8.0], 1)) / 2
    expected = 0.5 * (q_to_k + k_to_q)
    loss = symmetric_info_nce(query, key, 10.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_clip_loss_views_temperature_and_learnable_scale():
    g = torch.Generator().manual_seed(0)
    ecg = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    sa = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    la = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    logit_scale = torch.tensor(10.0, requires_grad=True)
    outputs = {"ecg": ecg, "cmr_sa": sa, "cmr_la_4ch": la, "logit_scale": logit_scale}
    terms = ClipLoss(views=("sa", "la_4ch"))(outputs)
    assert set(terms) == {"loss_clip_sa", "loss_clip_la_4ch"}
    assert terms["loss_clip_sa"].item() == pytest.approx(symmetric_info_nce(ecg, sa, 10.0).item())
    assert terms["loss_clip_la_4ch"].item() == pytest.approx(symmetric_info_nce(ecg, la, 10.0).item())
    sum(terms.values()).backward()
    assert logit_scale.grad is not None and logit_scale.grad.abs() > 0
    # A fixed temperature overrides the model's scale: 0.1 -> 10, whatever logit_scale says.
    fixed = ClipLoss(views=("sa",), temperature=0.1)({**outputs, "logit_scale": torch.tensor(3.0)})
    assert fixed["loss_clip_sa"].item() == pytest.approx(terms["loss_clip_sa"].item(), rel=1e-6)
    # The learned scale is clamped at 100 like CLIP.
    big = ClipLoss(views=("sa",))({**outputs, "logit_scale": torch.tensor(1e4)})
    assert big["loss_clip_sa"].item() == pytest.approx(symmetric_info_nce(ecg, sa, 100.0).item(), rel=1e-6)


def test_perfect_alignment_gives_low_loss_and_shuffled_high():
    eye = torch.eye(4)
    assert symmetric_info_nce(eye, eye, 100.0).item() < 1e-6
    # Partners swapped: every positive has similarity 0 and one negative has 1 -> loss ~ scale.
    swapped = eye[[1, 0, 3, 2]]
    assert symmetric_info_nce(eye, swapped, 100.0).item() == pytest.approx(100.0, rel=1e-3)


def test_invalid_pairs_are_excluded():
    g = torch.Generator().manual_seed(1)
    query = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    key = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    valid = torch.tensor([True, False, True, True, False, True])
    masked = symmetric_info_nce(query, key, 10.0, valid=valid)
    subset = symmetric_info_nce(query[valid], key[valid], 10.0)
    assert masked.item() == pytest.approx(subset.item(), rel=1e-6)
    none_valid = symmetric_info_nce(query, key, 10.0, valid=torch.zeros(6, dtype=torch.bool))
    assert none_valid.item() == 0.0


def test_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="must both be"):
        symmetric_info_nce(torch.zeros(3, 4), torch.zeros(2, 4), 10.0)
    with pytest.raises(ValueError, match="temperature"):
        ClipLoss(temperature=0.0)
    with pytest.raises(KeyError, match="logit_scale"):
        ClipLoss(views=("sa",))({"ecg": torch.eye(2), "cmr_sa": torch.eye(2)})


# --- two processes on gloo -------------------------------------------------------------------------------

GLOBAL_BATCH, IN_ECG, IN_CMR, EMBED = 8, 6, 5, 4


def _problem():
    """Two linear 'encoders', a learnable scale and a global batch, identical in every process."""
    g = torch.Generator().manual_seed(123)
    ecg_in = torch.randn(GLOBAL_BATCH, IN_ECG, generator=g)
    cmr_in = torch.randn(GLOBAL_BATCH, IN_CMR, generator=g)
    valid = torch.tensor([True, True, False, True, True, True, True, False])
    torch.manual_seed(7)
    model = torch.nn.ModuleDict({"ecg": torch.nn.Linear(IN_ECG, EMBED), "cmr": torch.nn.Linear(IN_CMR, EMBED)})
    model.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    return model, ecg_in, cmr_in, valid


def _loss(model, ecg_in, cmr_in, valid):
    outputs = {
        "ecg": F.normalize(model["ecg"](ecg_in), dim=-1),
        "cmr_sa": F.normalize(model["cmr"](cmr_in), dim=-1),
        "logit_scale": model.logit_scale.exp(),
    }
    return ClipLoss(views=("sa",))(outputs, valid={"sa": valid})["loss_clip_sa"]


def _worker(rank: int, world_size: int, init_file: str, result_path: str) -> None:
    torch.set_num_threads(1)  # two processes on a 2-core machine
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model, ecg_in, cmr_in, valid = _problem()
        part = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
        loss = _loss(model, ecg_in[part], cmr_in[part], valid[part])
        loss.backward()
        # What DistributedDataParallel does: average the loss reports and the gradients over processes.
        reported = loss.detach().clone()
        torch.distributed.all_reduce(reported)
        reported /= world_size
        grads = {}
        for name, param in model.named_parameters():
            grad = param.grad.clone()
            torch.distributed.all_reduce(grad)
            grads[name] = grad / world_size
        if rank == 0:
            torch.save({"loss": reported, "grads": grads}, result_path)
        # Both ranks reach here before either tears gloo down: destroying the group while the other
        # rank still has a collective in flight aborts the process ("terminate called without an
        # active exception", seen once in CI).
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gather_matches_single_process_global_batch(tmp_path):
    model, ecg_in, cmr_in, valid = _problem()
    loss = _loss(model, ecg_in, cmr_in, valid)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}

    result_path = tmp_path / "result.pt"
    # spawn, not fork: a forked child of a process that already ran torch's thread pool can deadlock.
    try:
        torch.multiprocessing.spawn(_worker, args=(2, str(tmp_path / "init"), str(result_path)), nprocs=2, join=True)
    except torch.multiprocessing.ProcessExitedException as err:
        # gloo's teardown still aborts now and then after both ranks passed the final barrier ("terminate
        # called without an active exception", SIGABRT, in CI and on the 2-core machine). The result was
        # written before the barrier; any other failure (a Python exception, another signal) still fails.
        if err.signal_name != "SIGABRT" or not result_path.exists():
            raise
    result = torch.load(result_path, weights_only=True)
    assert result["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    for name, grad in expected.items():
        torch.testing.assert_close(result["grads"][name], grad, rtol=1e-5, atol=1e-6)
    # Without gathering, each process would only see its own 4 pairs: a different loss.
    local_only = sum(
        symmetric_info_nce(F.normalize(model["ecg"](ecg_in[s]), dim=-1), F.normalize(model["cmr"](cmr_in[s]), dim=-1),
                           10.0, valid=valid[s]).item() for s in (slice(0, 4), slice(4, 8))) / 2
    assert abs(local_only - loss.item()) > 1e-3
