"""initlab doctor on architectures nobody here wrote: torchvision's ResNet-18 (as written there,
with and without zero-initialised residual branches), nn.TransformerEncoder, nn.LSTM, a DCGAN
generator (transposed convolutions), and Hugging Face models built from small configs with
random weights (ResNet, BERT, GPT-2; no download). Each test says what doctor should report."""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from initlab.torch.doctor import doctor  # noqa: E402

HE_FAN_OUT = 'kaiming_normal_(mode="fan_out", nonlinearity="relu")'
TORCH_DEFAULT = "kaiming_uniform_(a=math.sqrt(5))"


def batch(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def tokens(vocab: int, *shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def audit(model: nn.Module, X: torch.Tensor):
    """doctor's report, checking that the model is bit-identical afterwards (parameters and
    buffers) and that no .grad was written."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = doctor(model, X)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    return report


# torchvision/models/resnet.py (BasicBlock, ResNet, resnet18), without torchvision: its wheel
# fails beside CPU torch 2.13 ("operator torchvision::nms does not exist")
class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision's resnet18(); ``width`` (64 there) scales every stage, for a faster test."""

    def __init__(self, num_classes: int = 1000, zero_init_residual: bool = False,
                 width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(width, 1)
        self.layer2 = self._make_layer(2 * width, 2)
        self.layer3 = self._make_layer(4 * width, 2)
        self.layer4 = self._make_layer(8 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # "each residual branch starts with zeros" (Goyal et al. 2017)
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes))
        blocks = [BasicBlock(self.inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_resnet18_every_conv_is_followed_by_its_batchnorm():
    torch.manual_seed(0)
    model = ResNet18(num_classes=10)
    report = audit(model, batch(4, 3, 32, 32))
    assert report.summary["layers"] == 21
    assert report.summary["verdicts"]["healthy"] == 21
    assert report.summary["layers_to_fix"] == 0 and report.fix == ""
    convs, fc = report.layers[:-1], report.layers[-1]
    for row in convs:
        # torchvision's own call, also where fan_in "linear" or "relu" draws the same (ties)
        assert row["init"]["code"] == HE_FAN_OUT, row["init"]
        bn = row["path"].replace("conv", "bn").replace("downsample[0]", "downsample[1]")
        assert row["followed_by"] == [bn]
        assert "the norm sets its output's scale" in row["note"]
        assert math.isfinite(row["backward_gain"]) and row["same_as"] is None
    # the stem's mean-field gain is 147 x 2 / 3136 (fan_out init): not a problem under BatchNorm
    assert report.layers[0]["moment_gain"] < 0.5 and report.layers[0]["fix"] is None
    assert fc["path"] == "model.fc" and fc["init"]["code"] == TORCH_DEFAULT
    assert fc["followed_by"] == [] and "does not compound" in fc["note"]  # a lone head


def test_resnet18_zero_init_residual_branches_are_zero_by_design():
    torch.manual_seed(0)
    model = ResNet18(num_classes=10, zero_init_residual=True, width=16)
    report = audit(model, batch(4, 3, 32, 32))
    assert report.summary["verdicts"]["healthy"] == 21 and report.fix == ""
    rows = {row["path"]: row for row in report.layers}
    branch_ends = [p for p in rows if p.endswith("conv2")]
    assert len(branch_ends) == 8
    for path in branch_ends:
        assert "weight is 0" in rows[path]["note"] and "Goyal" in rows[path]["note"]
        # no gradient through a zero BatchNorm: the branch's convs have no backward gain
        assert math.isnan(rows[path]["backward_gain"])
        assert math.isnan(rows[path.replace("conv2", "conv1")]["backward_gain"])
        assert "no gradient reaches" in rows[path.replace("conv2", "conv1")]["note"]
    for path in ("model.conv1", "model.layer2[0].downsample[0]", "model.fc"):
        assert math.isfinite(rows[path]["backward_gain"]), path  # on the identity path


def test_transformer_encoder_lists_the_attention_weights_it_cannot_measure():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    report = audit(model, batch(4, 16, 64))
    assert [row["path"] for row in report.layers] == [
        f"model.layers[{i}].linear{j}" for i in (0, 1) for j in (1, 2)]
    assert report.summary["verdicts"]["healthy"] == 4 and report.fix == ""
    assert report.summary["not_reached"] == []  # out_proj is used, through its weight
    for row in report.layers:
        assert row["init"]["code"] == TORCH_DEFAULT
        # outside the band, not judged: the chain linear1 -> linear2 ends in norm2
        assert row["moment_gain"] == pytest.approx(1 / 3, rel=0.1) and row["fix"] is None
    assert "norm2" in report.layers[1]["note"]  # linear2 -> dropout -> + x -> norm2
    weights = {w["path"]: w for w in report.weights}
    assert set(weights) == {f"model.layers[{i}].self_attn.{name}" for i in (0, 1)
                            for name in ("in_proj_weight", "out_proj.weight")}
    for i in (0, 1):
        packed = weights[f"model.layers[{i}].self_attn.in_proj_weight"]
        assert packed["shape"] == [192, 64] and packed["init"]["code"] == "xavier_uniform_()"
        out = weights[f"model.layers[{i}].self_attn.out_proj.weight"]
        assert out["init"]["code"] == TORCH_DEFAULT and "without calling" in out["note"]
    assert all(w["verdict"] == "not measured" for w in report.weights)
    assert "4 other weights not measured" in repr(report)
    # nn.TransformerEncoder deep-copies its layer: the second starts as the first, and the
    # note's code draws each copy afresh (pytorch/pytorch#86274)
    copies = [e for e in report.layers + report.weights if e["same_as"]]
    assert report.summary["copies"] == [e["path"] for e in copies]
    assert [e["path"].removesuffix(".weight") for e in copies] == [
        "model.layers[1].linear1", "model.layers[1].linear2",
        "model.layers[1].self_attn.in_proj_weight", "model.layers[1].self_attn.out_proj"]
    assert all(e["same_as"].startswith(e["path"].replace("layers[1]", "layers[0]"))
               for e in copies)
    for e in copies:
        exec(e["note"].split("draw it afresh: ")[1], {"model": model, "nn": nn, "math": math})
    again = doctor(model, batch(4, 16, 64))
    assert not any(e["same_as"] for e in again.layers + again.weights)
    assert [e["init"]["code"] for e in again.weights] == [e["init"]["code"]
                                                          for e in report.weights]


class Tagger(nn.Module):
    def __init__(self, vocab: int = 100, hidden: int = 48):
        super().__init__()
        self.embed = nn.Embedding(vocab, 32)
        self.lstm = nn.LSTM(32, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 5)

    def forward(self, ids):
        return self.head(self.lstm(self.embed(ids))[0])


def test_lstm_gate_matrices_and_embedding_are_listed_with_torchs_defaults():
    torch.manual_seed(0)
    report = audit(Tagger(), tokens(100, 4, 12))
    assert report.summary["layers"] == 1 and report.summary["not_measured"] == 5
    head = report.layers[0]
    assert head["verdict"] == "healthy" and head["fix"] is None  # a lone head: not judged
    weights = {w["name"]: w for w in report.weights}
    assert weights["embed.weight"]["init"]["code"] == "normal_()"
    assert "lookup table" in weights["embed.weight"]["note"]
    default = "uniform_(-1 / math.sqrt(48), 1 / math.sqrt(48))"
    for name in ("weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"):
        w = weights[f"lstm.{name}"]
        assert w["shape"][0] == 4 * 48 and w["init"]["code"] == default, w
        assert w["verdict"] == "not measured" and "gate matrix" in w["note"]
    # (4H, H): U(+-1/sqrt(H)) is also torch's Linear default for that shape, listed second
    assert weights["lstm.weight_hh_l0"]["init"]["also"][0] == TORCH_DEFAULT


def dcgan_generator(nz: int = 32, ngf: int = 16) -> nn.Sequential:
    """pytorch/examples dcgan/main.py's Generator and weights_init, at a smaller ngf."""
    mods: list[nn.Module] = []
    widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        mods += [nn.ConvTranspose2d(a, b, 4, 1 if i == 0 else 2, 0 if i == 0 else 1,
                                    bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
    model = nn.Sequential(*mods, nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return model


def test_dcgan_generator_is_recognised_and_batchnorm_absorbs_its_scale():
    torch.manual_seed(0)
    model, z = dcgan_generator(), batch(4, 32, 1, 1)
    report = audit(model, z)
    assert report.summary["verdicts"]["healthy"] == 5 and report.fix == ""
    assert all(row["init"]["code"] == "normal_(std=0.02)" for row in report.layers)
    assert [row["followed_by"] for row in report.layers] == [
        ["model[1]"], ["model[4]"], ["model[7]"], ["model[10]"], []]
    # negative control: weights 1000 x too large. Under BatchNorm the output scale is moot, no
    # fix; the last layer, into Tanh with no norm, saturates and gets its fix
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.ConvTranspose2d):
                m.weight.mul_(1000)
    report = audit(model, z)
    rows = report.layers
    assert all(r["stats_verdict"] == "exploding" and r["verdict"] == "healthy"
               and r["fix"] is None for r in rows[:4])
    assert rows[4]["verdict"] == "saturated" and rows[4]["fix"] is not None
    assert report.fix.count("nn.init.kaiming_normal_") == 1
    assert 'model[12].weight, mode="fan_out", nonlinearity="tanh"' in report.fix


def test_hf_resnet18_from_its_config():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ResNetConfig(depths=[2, 2, 2, 2], layer_type="basic",
                                       embedding_size=16, hidden_sizes=[16, 32, 64, 128])
    report = audit(transformers.ResNetModel(config), batch(4, 3, 32, 32))
    assert report.summary["layers"] == 20  # ResNet-18's 17 convs + 3 shortcuts, no head
    assert report.summary["verdicts"]["healthy"] == 20 and report.fix == ""
    for row in report.layers:
        assert row["init"]["code"] == HE_FAN_OUT
        assert row["followed_by"] == [row["path"].replace("convolution", "normalization")]


def test_hf_bert_is_recognised_as_normal_002_and_nothing_is_fixed():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=64)
    report = audit(transformers.BertModel(config), tokens(500, 4, 64))
    assert report.summary["layers"] == 13  # 2 x (q, k, v, attention out, 2 feed-forward) + pooler
    assert report.summary["verdicts"]["healthy"] == 13 and report.fix == ""
    assert all(row["init"]["code"] == "normal_(std=0.02)" for row in report.layers)
    assert all(w["init"]["code"] == "normal_(std=0.02)" for w in report.weights)  # embeddings
    rows = {row["name"]: row for row in report.layers}
    # the attention output, averaged over 64 tokens, is tiny before its residual sum + LayerNorm
    out = rows["encoder.layer.0.attention.output.dense"]
    assert out["stats_verdict"] == "vanishing" and "meets a norm first" in out["note"]
    query = rows["encoder.layer.0.attention.self.query"]
    assert query["moment_gain"] < 0.05 and "not judged" in query["note"]
    assert query["backward_gain"] == pytest.approx(query["sigma_w"], rel=0.3)  # q alone


def test_hf_gpt2_conv1d_weights_are_listed_with_the_scaled_residual_init():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=500, n_embd=32, n_layer=2, n_head=4,
                                     n_positions=64, bos_token_id=0, eos_token_id=0)
    report = audit(transformers.GPT2Model(config), tokens(500, 4, 16))
    assert report.summary["layers"] == 0  # transformers' Conv1D is no nn.Linear: listed only
    weights = {w["name"]: w for w in report.weights}
    assert weights["h.0.attn.c_attn.weight"]["init"]["code"] == "normal_(std=0.02)"
    # GPT-2 scales its residual projections by 1 / sqrt(2 n_layer): 0.02 / 2
    assert weights["h.0.mlp.c_proj.weight"]["init"]["code"] == "normal_(std=0.01)"
    assert weights["wte.weight"]["init"]["code"] == "normal_(std=0.02)"
