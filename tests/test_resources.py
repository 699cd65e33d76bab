import pytest
import torch

from medlib.resources import check_paper_resources, paper_estimate


def test_medblip_estimate_counts_581m_trainable():
    est = paper_estimate("medblip")
    assert est.trainable_params == 581_128_192 and 10 < est.gib < 40


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
@pytest.mark.parametrize("experiment", ["medblip", "clinicalblip", "minigpt_med"])
def test_paper_profile_without_gpu_stops_at_once_with_an_estimate(experiment):
    with pytest.raises(RuntimeError, match=r"needs a CUDA GPU with about \d+ GiB"):
        check_paper_resources(experiment, device="cpu")
