"""The non-gated MLP option and the two readings of the paper's 2.4B model."""

import math

import pytest
import torch

from iha.cli import main
from iha.models import DecoderLM, ModelConfig, get_preset, preset_assumptions
from iha.models.counts import model_flops
from iha.models.layers import GELUMLP


def test_gelu_mlp_is_down_of_exact_gelu_of_up_float64():
    torch.manual_seed(0)
    mlp = GELUMLP(6, 10).double()
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    up, down = mlp.up_proj.weight.tolist(), mlp.down_proj.weight.tolist()
    for row in x.reshape(-1, 6).tolist():
        hidden = [sum(w * v for w, v in zip(ws, row)) for ws in up]
        act = [h * 0.5 * (1.0 + math.erf(h / math.sqrt(2.0))) for h in hidden]
        want = [sum(w * a for w, a in zip(ws, act)) for ws in down]
        got = mlp(torch.tensor(row, dtype=torch.float64)).tolist()
        assert got == pytest.approx(want, abs=1e-12)


def test_mlp_type_builds_the_layer_and_counts_its_flops_and_parameters():
    cfg = ModelConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_type="gelu")
    assert cfg.ffn_size == 64  # 4 x hidden by default
    model = DecoderLM(cfg)
    assert all(isinstance(layer.mlp, GELUMLP) for layer in model.layers)
    swiglu = DecoderLM(cfg.replace(mlp_type="swiglu", intermediate_size=64))
    # two D x F matrices per layer instead of three
    assert swiglu.num_parameters() - model.num_parameters() == 2 * 16 * 64
    n = 32
    gated = cfg.replace(mlp_type="swiglu", intermediate_size=64)
    gap = model_flops(gated, n)["mlp"] - model_flops(cfg, n)["mlp"]
    layers, flops_per_multiply_add = 2, 2
    assert gap == layers * flops_per_multiply_add * n * 16 * 64  # one D x F matrix fewer
    out = model(torch.randint(0, cfg.vocab_size, (2, 5)))
    assert out.shape == (2, 5, cfg.vocab_size) and torch.isfinite(out).all()


def test_unknown_mlp_type_names_the_key():
    with pytest.raises(ValueError, match="mlp_type"):
        ModelConfig(mlp_type="relu2")


def test_both_2_4b_readings_have_the_parameter_counts_of_their_formulas():
    d, layers, vocab, heads = 2560, 26, 128256, 20
    attention = 4 * d * d  # q, k, v, o (no GQA)
    norms = 2 * d * layers + d
    literal = layers * (attention + 2 * d * 10240) + vocab * d + norms  # tied
    lingua = layers * (attention + 3 * d * 6912) + vocab * d + norms
    with torch.device("meta"):
        got_mlp = DecoderLM(get_preset("paper-2.4b-mlp", attention_variant="global"))
        got_swiglu = DecoderLM(get_preset("paper-2.4b-swiglu", attention_variant="global"))
    assert got_mlp.num_parameters() == literal == 2_373_194_240
    assert got_swiglu.num_parameters() == lingua == 2_390_233_600
    assert get_preset("paper-2.4b") == get_preset("paper-2.4b-swiglu")  # deprecated alias
    assert get_preset("paper-2.4b-mlp").num_attention_heads == heads
    for name in ("paper-2.4b-mlp", "paper-2.4b-swiglu"):
        notes = " ".join(preset_assumptions(name))
        assert "our" in notes and "assumed" in notes and "tied" in notes
    assert preset_assumptions("tiny") == ()


@pytest.mark.parametrize(
    "ffn,tied,kv_heads,billions,billions_without_embeddings",
    [
        (10240, False, 20, 3.383, 2.726),
        (10240, True, 20, 3.055, 2.726),
        (10240, True, 4, 2.782, 2.454),
        (6912, False, 20, 2.719, 2.062),
    ],
)
def test_the_other_swiglu_readings_have_the_parameter_counts_of_their_formulas(
    ffn, tied, kv_heads, billions, billions_without_embeddings
):
    """The rows of docs/models.md's parameter table that are not presets (SwiGLU, the given
    width, tying and key/value heads), built on the meta device and counted against the formula
    written out here; the table's rounded values follow."""
    d, layers, vocab, head_dim = 2560, 26, 128256, 128
    attention = 2 * d * d + 2 * d * kv_heads * head_dim  # q, o; k, v with GQA
    swiglu = 3 * d * ffn
    embeddings = vocab * d * (1 if tied else 2)
    norms = 2 * d * layers + d
    want = layers * (attention + swiglu) + embeddings + norms
    cfg = get_preset("paper-2.4b-swiglu", attention_variant="global", intermediate_size=ffn,
                     tie_word_embeddings=tied, num_key_value_heads=kv_heads)
    with torch.device("meta"):
        got = DecoderLM(cfg).num_parameters()
    assert got == want
    assert round(got / 1e9, 3) == billions
    assert round((got - embeddings) / 1e9, 3) == billions_without_embeddings


def test_describe_of_both_readings_prints_each_with_its_assumptions(capsys):
    assert main(["describe", "paper-2.4b-swiglu", "paper-2.4b-mlp"]) == 0
    out = capsys.readouterr().out
    assert "paper-2.4b-swiglu" in out and "our literal reading" in out
    assert "2,390,233,600" in out and "2,373,194,240" in out
    assert "the paper's model" not in out
