"""PyTorch reference modules for the resattn model file contract.

Every residual block computes f = F(x), a = A(f), y = relu(s + a * f), where s is x or
downsample(x) and A is SE, ECA, CBAM, coordinate attention (CA) or nothing. Parameter
names follow timm / torchvision ResNets (conv1, bn1, layer{S}.{B}.conv1, ...,
downsample.0/1, fc) and attention parameters live under layer{S}.{B}.se.  The C engine is
checked against these modules, so they implement the contract literally rather than
wrapping timm (which is not available in Debian).

build_model(config) builds a network from a resattn.config dict and registers forward
hooks that record every block's attention masks in model.masks, keyed
"<block>/<kind>" (e.g. "layer2.1/channel" [N,C], "/spatial" [N,H,W], "/coord_h"
[N,C,H], "/coord_w" [N,C,W]).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

BLOCKS = ("basic", "bottleneck")
STEMS = ("imagenet", "cifar")
ATTENTIONS = ("none", "se", "eca", "cbam", "ca")


def eca_kernel_size(channels, gamma=2, b=1):
    """ECA-Net's adaptive kernel size: t = int(|(log2 C + b) / gamma|), made odd."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class SE(nn.Module):
    """Squeeze-and-excitation: a = sigmoid(fc2(relu(fc1(mean_hw f)))), a is [N,C,1,1]."""

    def __init__(self, channels, ratio=16):
        super().__init__()
        rd = max(1, channels // ratio)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)
        self.last_masks = {}

    def forward(self, f):
        a = torch.sigmoid(self.fc2(F.relu(self.fc1(f.mean((2, 3), keepdim=True)))))
        self.last_masks = {"channel": a[:, :, 0, 0]}
        return f * a


class ECA(nn.Module):
    """Efficient channel attention: a 1-D conv (odd k, zero padding) across channels of
    the pooled vector, a = sigmoid(conv1d(mean_hw f)) of shape [N,C,1,1]."""

    def __init__(self, channels, k=None):
        super().__init__()
        k = eca_kernel_size(channels) if k is None else k
        if k % 2 != 1:
            raise ValueError("eca kernel size must be odd, got %d" % k)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.last_masks = {}

    def forward(self, f):
        y = f.mean((2, 3))  # [N,C]
        a = torch.sigmoid(self.conv(y[:, None, :]))[:, 0, :]  # [N,C]
        self.last_masks = {"channel": a}
        return f * a[:, :, None, None]


class ConvBn(nn.Module):
    """conv (no bias) + BN, named conv / bn as in timm's ConvNormAct (CBAM spatial)."""

    def __init__(self, cin, cout, k, eps):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x):
        return self.bn(self.conv(x))


class CbamChannel(nn.Module):
    """CBAM channel gate: shared bias-free MLP over mean- and max-pooled vectors."""

    def __init__(self, channels, ratio=16):
        super().__init__()
        rd = max(1, channels // ratio)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=False)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=False)

    def mlp(self, v):
        return self.fc2(F.relu(self.fc1(v)))

    def forward(self, f):  # returns the mask [N,C,1,1]
        avg = f.mean((2, 3), keepdim=True)
        mx = f.amax((2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class CbamSpatial(nn.Module):
    """CBAM spatial gate: sigmoid(bn(conv(cat(mean_c, max_c)))) of shape [N,1,H,W]."""

    def __init__(self, k=7, eps=1e-5):
        super().__init__()
        self.conv = ConvBn(2, 1, k, eps)

    def forward(self, f):
        z = torch.cat([f.mean(1, keepdim=True), f.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(z))


class CBAM(nn.Module):
    """Channel gate then spatial gate: f' = a_c * f; result a_s * f'."""

    def __init__(self, channels, ratio=16, k=7, eps=1e-5):
        super().__init__()
        self.channel = CbamChannel(channels, ratio)
        self.spatial = CbamSpatial(k, eps)
        self.last_masks = {}

    def forward(self, f):
        ac = self.channel(f)
        f1 = f * ac
        as_ = self.spatial(f1)
        self.last_masks = {"channel": ac[:, :, 0, 0], "spatial": as_[:, 0]}
        return f1 * as_


class CoordAtt(nn.Module):
    """Coordinate attention (Hou et al. 2021). z = cat(mean over W -> [N,C,H,1],
    mean over H -> [N,C,W,1]) along the spatial axis; y = hardswish(bn1(conv1(z)));
    a_h = sigmoid(conv_h(y_h)) [N,C,H,1], a_w = sigmoid(conv_w(y_w)) [N,C,1,W]."""

    def __init__(self, channels, ratio=32, min_mid=8, bias=True, eps=1e-5):
        super().__init__()
        mid = max(min_mid, channels // ratio)
        self.conv1 = nn.Conv2d(channels, mid, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(mid, eps=eps)
        self.conv_h = nn.Conv2d(mid, channels, 1, bias=bias)
        self.conv_w = nn.Conv2d(mid, channels, 1, bias=bias)
        self.last_masks = {}

    def forward(self, f):
        n, c, h, w = f.shape
        zh = f.mean(3, keepdim=True)  # [N,C,H,1]
        zw = f.mean(2, keepdim=True).permute(0, 1, 3, 2)  # [N,C,W,1]
        y = F.hardswish(self.bn1(self.conv1(torch.cat([zh, zw], dim=2))))
        yh, yw = torch.split(y, [h, w], dim=2)
        ah = torch.sigmoid(self.conv_h(yh))  # [N,C,H,1]
        aw = torch.sigmoid(self.conv_w(yw.permute(0, 1, 3, 2)))  # [N,C,1,W]
        self.last_masks = {"coord_h": ah[:, :, :, 0], "coord_w": aw[:, :, 0, :]}
        return f * ah * aw


def make_attention(kind, channels, opts, eps):
    """Attention module for `channels` or None; opts holds optional sizes (see build_model)."""
    if kind == "none":
        return None
    if kind == "se":
        return SE(channels, opts.get("se_ratio", 16))
    if kind == "eca":
        return ECA(channels, opts.get("eca_k"))
    if kind == "cbam":
        return CBAM(channels, opts.get("cbam_ratio", 16), opts.get("cbam_k", 7), eps)
    if kind == "ca":
        return CoordAtt(
            channels,
            opts.get("ca_ratio", 32),
            opts.get("ca_min_mid", 8),
            opts.get("ca_bias", True),
            eps,
        )
    raise ValueError("unknown attention %r (expected one of %s)" % (kind, ", ".join(ATTENTIONS)))


def make_downsample(cin, cout, stride, eps):
    """1x1 conv with the block's stride + BN, iff the shape changes (else None)."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=eps))


class BasicBlock(nn.Module):
    """F = bn2(conv2(relu(bn1(conv1(x))))), 3x3 convs, stride on conv1."""

    expansion = 1

    def __init__(self, cin, planes, stride, attention, opts, eps):
        super().__init__()
        cout = planes
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.se = make_attention(attention, cout, opts, eps)
        self.downsample = make_downsample(cin, cout, stride, eps)

    def branch(self, x):
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x):
        f = self.branch(x)
        af = f if self.se is None else self.se(f)  # a * f, mask computed from f only
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(s + af)


class Bottleneck(BasicBlock):
    """F = bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))): 1x1, 3x3 (stride), 1x1 x4."""

    expansion = 4

    def __init__(self, cin, planes, stride, attention, opts, eps):
        nn.Module.__init__(self)
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=eps)
        self.se = make_attention(attention, cout, opts, eps)
        self.downsample = make_downsample(cin, cout, stride, eps)

    def branch(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return self.bn3(self.conv3(y))


class _MaskRecorder:
    """Forward hook copying an attention module's masks into model.masks["<block>/<kind>"];
    a class rather than a closure so that a whole model can be pickled (torch.save)."""

    def __init__(self, model, block_name):
        self.model, self.block_name = model, block_name

    def __call__(self, mod, inp, out):
        for kind, m in mod.last_masks.items():
            self.model.masks["%s/%s" % (self.block_name, kind)] = m.detach()


class ResAttnNet(nn.Module):
    """Stem, stages layer1..layerS (stride 2 from the second stage on), GAP, fc."""

    def __init__(self, config, widths=None, stem_width=None, **opts):
        super().__init__()
        check_config(config)
        layers = list(config["layers"])
        eps = float(config.get("bn_eps", 1e-5))
        widths = list(widths or config.get("widths") or [64 * 2**i for i in range(len(layers))])
        if len(widths) != len(layers):
            raise ValueError("widths has %d entries but layers has %d" % (len(widths), len(layers)))
        block = BasicBlock if config["block"] == "basic" else Bottleneck
        cin = config["input"]["channels"]
        sw = stem_width or widths[0]
        self.stem_kind = config["stem"]
        if self.stem_kind == "imagenet":
            self.conv1 = nn.Conv2d(cin, sw, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(cin, sw, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(sw, eps=eps)
        c = sw
        self.block_names = []
        for s, (n, planes) in enumerate(zip(layers, widths)):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(block(c, planes, stride, config["attention"], opts, eps))
                c = planes * block.expansion
                self.block_names.append("layer%d.%d" % (s + 1, b))
            self.add_module("layer%d" % (s + 1), nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.fc = nn.Linear(c, config["num_classes"])
        self.masks = {}
        self._register_mask_hooks()

    def _register_mask_hooks(self):
        for name in self.block_names:
            att = self.get_submodule(name).se
            if att is not None:
                att.register_forward_hook(_MaskRecorder(self, name))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.stem_kind == "imagenet":
            x = F.max_pool2d(x, 3, stride=2, padding=1)
        for s in range(self.num_stages):
            x = getattr(self, "layer%d" % (s + 1))(x)
        return self.fc(x.mean((2, 3)))


def check_config(config):
    """Raise ValueError naming the first field of a resattn.config that breaks the contract."""
    for key in ("block", "layers", "stem", "attention", "num_classes", "input"):
        if key not in config:
            raise ValueError("config: missing field %r" % key)
    if config["block"] not in BLOCKS:
        raise ValueError("config: unknown block %r" % config["block"])
    if config["stem"] not in STEMS:
        raise ValueError("config: unknown stem %r" % config["stem"])
    if config["attention"] not in ATTENTIONS:
        raise ValueError("config: unknown attention %r" % config["attention"])
    layers = config["layers"]
    if not (1 <= len(layers) <= 6) or any(int(n) < 1 for n in layers):
        raise ValueError("config: layers must be 1 to 6 positive integers, got %r" % (layers,))
    for k in ("channels", "height", "width"):
        if int(config["input"].get(k, 0)) < 1:
            raise ValueError("config: input.%s missing or < 1" % k)


def build_model(config, widths=None, **opts):
    """Build a ResAttnNet from a resattn.config dict.

    widths: planes per stage (default config["widths"] or 64*2^i); opts: stem_width,
    se_ratio (16), eca_k (ECA-Net rule), cbam_ratio (16), cbam_k (7), ca_ratio (32),
    ca_min_mid (8), ca_bias (True). These sizes are recovered by the C loader from the
    tensor shapes, so they are not part of the config."""
    return ResAttnNet(config, widths=widths, **opts)


def randomize(model, seed=None, bn_range=(0.5, 2.0), weight_scale=1.0):
    """Give every parameter and BN statistic random, non-trivial values (for fixtures and
    parity checks): conv/linear weights ~ N(0, 1/fan_in) so activations keep their scale,
    BN gamma/var uniform in bn_range, beta/mean ~ N(0, 0.2)."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    lo, hi = bn_range

    def uni(t):
        return torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(uni(m.weight))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(uni(m.running_var))
            elif isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * weight_scale / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model
