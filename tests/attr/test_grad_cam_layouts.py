"""LayerGradCam on token maps (ViT) and channels-last maps (Swin)."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerGradCam
from captum.attr import Saliency
from torch import nn

from captum_robust.attr import differentiable


class TokenNet(nn.Module):
    """Conv patch embedding -> (B, N, D) tokens with a class token first."""

    def __init__(self, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.embed = nn.Conv2d(2, 6, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.tokens = nn.Identity()
        self.fc = nn.Linear(6 * 17, 3)

    def forward(self, x):
        e = self.embed(x)  # (B, 6, 4, 4)
        if self.channels_last:
            h = self.tokens(e.permute(0, 2, 3, 1))  # (B, 4, 4, 6)
            return self.fc(F.pad(F.softplus(h).flatten(1), (0, 6)))
        t = e.flatten(2).transpose(1, 2)  # (B, 16, 6), row-major patches
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)
        return self.fc(F.softplus(self.tokens(t)).flatten(1))


@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_captum_on_the_channels_first_tensor(channels_last):
    # The token / channels-last layer holds the conv output rearranged, so its
    # Grad-CAM is Captum's Grad-CAM of the conv layer.
    torch.manual_seed(0)
    net = TokenNet(channels_last).double()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2, 1])
    expected = LayerGradCam(net, net.embed).attribute(x, target=target)
    cam = differentiable(LayerGradCam(net, net.tokens))
    got = cam.attribute(x, target=target)  # layout inferred
    assert got.shape == (3, 1, 4, 4)
    torch.testing.assert_close(got, expected)
    layout = "channels_last" if channels_last else "tokens"
    torch.testing.assert_close(cam.attribute(x, target=target, layout=layout), expected)
    if not channels_last:
        explicit = cam.attribute(x, target=target, token_grid=(4, 4))
        torch.testing.assert_close(explicit, expected)
    up = differentiable(LayerGradCam(net, net.tokens), upsample_to_input=True)
    big = up.attribute(x, target=target, relu_attributions=True)
    assert big.shape == (3, 1, 8, 8)
    (g,) = torch.autograd.grad(big.sum(), x)  # differentiable
    assert g.abs().sum() > 0
    unsummed = cam.attribute(x, target=target, attr_dim_summation=False)
    torch.testing.assert_close(unsummed.sum(1, keepdim=True), expected)


def test_vit_block_by_hand():
    torch.manual_seed(0)
    vit = (
        torchvision.models.VisionTransformer(
            image_size=12,
            patch_size=4,
            num_layers=1,
            num_heads=2,
            hidden_dim=8,
            mlp_dim=16,
            num_classes=3,
        )
        .double()
        .eval()
    )
    nn.init.normal_(vit.heads.head.weight)
    block = vit.encoder.layers[-1]
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    got = differentiable(LayerGradCam(vit, block)).attribute(x, target=1)

    seen = []
    handle = block.register_forward_hook(lambda m, i, o: seen.append(o))
    out = vit(x)
    handle.remove()
    tokens = seen[0]  # (2, 10, 8): class token, then a 3 x 3 grid
    (grads,) = torch.autograd.grad(out[:, 1].sum(), tokens)
    acts = tokens[:, 1:].reshape(2, 3, 3, 8)
    weights = grads[:, 1:].reshape(2, 3, 3, 8).mean(dim=(1, 2))  # (2, 8)
    expected = torch.einsum("bhwd,bd->bhw", acts, weights).unsqueeze(1)
    torch.testing.assert_close(got, expected)


def test_swin_stage_channels_last():
    torch.manual_seed(0)
    swin = (
        torchvision.models.SwinTransformer(
            patch_size=[4, 4],
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 1],
            window_size=[2, 2],
            num_classes=3,
        )
        .double()
        .eval()
    )
    stage = swin.features[1]
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    cam = differentiable(LayerGradCam(swin, stage), upsample_to_input=True)
    got = cam.attribute(x, target=0, upsample_to_input=False)
    seen = []
    handle = stage.register_forward_hook(lambda m, i, o: seen.append(o))
    out = swin(x)
    handle.remove()
    acts = seen[0]  # (2, 4, 4, 8)
    (grads,) = torch.autograd.grad(out[:, 0].sum(), acts)
    expected = (acts * grads.mean(dim=(1, 2), keepdim=True)).sum(-1).unsqueeze(1)
    torch.testing.assert_close(got, expected)
    assert cam.attribute(x, target=0).shape == (2, 1, 16, 16)


def test_layout_errors_name_the_argument():
    torch.manual_seed(0)
    net = TokenNet().double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    cam = differentiable(LayerGradCam(net, net.tokens))
    with pytest.raises(ValueError, match="`layout`"):
        cam.attribute(x, target=0, layout="rows")
    with pytest.raises(ValueError, match="`layout`='tokens'"):
        differentiable(LayerGradCam(net, net.embed)).attribute(
            x, target=0, layout="tokens"
        )
    with pytest.raises(ValueError, match="`token_grid`"):
        cam.attribute(x, target=0, token_grid=(5, 5))
    with pytest.raises(TypeError, match="`token_grid`"):
        cam.attribute(x, target=0, token_grid=(4.0, 4))
    with pytest.raises(ValueError, match="`layout`"):
        differentiable(Saliency(net), layout="tokens")
    with pytest.raises(ValueError, match="`token_grid`"):
        differentiable(Saliency(net), token_grid=(4, 4))
    # Tokens of a non-image input: the grid cannot be inferred.
    seq = nn.Sequential(
        nn.Unflatten(1, (4, 3)), nn.Identity(), nn.Flatten(), nn.Linear(12, 2)
    )
    seq = seq.double()
    tokens = differentiable(LayerGradCam(seq, seq[1]), layout="tokens")
    with pytest.raises(ValueError, match="`token_grid` is needed"):
        tokens.attribute(torch.randn(2, 12, dtype=torch.float64), target=0)
    got = tokens.attribute(
        torch.randn(2, 12, dtype=torch.float64), target=0, token_grid=(2, 2)
    )
    assert got.shape == (2, 1, 2, 2)
