import pytest
import torch

from training import models


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_output_is_a_probability_pair(arch):
    m = models.build(arch, 64).eval()
    with torch.no_grad():
        p = m(torch.rand(2, 1, 64, 64))
    assert p.shape == (2, 2)
    assert torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)


def test_fpn_taps_have_the_papers_channels_and_strides():
    taps = models.ResNet50V2(1).eval()(torch.rand(1, 1, 256, 256))
    # conv4_block1_preact_relu, conv5_block1_preact_relu, post_relu
    assert [tuple(t.shape[1:]) for t in taps] == [(512, 16, 16), (1024, 8, 8), (2048, 8, 8)]


def test_fpn_has_five_heads_of_two_and_final_dense():
    m = models.ResNet50V2FPN(256)
    assert len(m.heads) == 5 and all(h.weight.shape[1] == 2 for h in m.heads)
    assert m.heads[0].weight.shape[0] == 256 * 16 * 16
    assert tuple(m.final.weight.shape) == (10, 2)
    assert m.drop.p == 0.5


def test_backbone_is_resnet50_sized():
    n = sum(p.numel() for p in models.ResNet50V2(3).parameters())
    assert 23_000_000 < n < 24_000_000  # Keras ResNet50V2 without top: 23.56 M


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build("vgg", 64)
