"""Export round trips: our params -> HF state dict -> transformers logits, and back via load_model."""
import numpy as np
import pytest

import seekjax as sj
from seekjax.models import export

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CASES = [
    # (arch, heads, kv_heads, head_dim, tied, qkv_bias)
    ("llama", 4, 2, 16, True, False),
    ("llama", 6, 2, 8, False, False),   # head_dim * heads != hidden
    ("qwen2", 4, 2, 12, False, True),
    ("qwen3", 4, 2, 16, True, False),
]


def _random(arch, heads, kv, hd, tied, bias, seed=0):
  cfg = sj.ModelConfig(arch=arch, vocab_size=97, hidden_size=48, num_layers=2, num_heads=heads,
                       num_kv_heads=kv, head_dim=hd, intermediate_size=80, rope_theta=1e4,
                       rms_norm_eps=1e-5, tie_embeddings=tied, qkv_bias=bias,
                       qk_norm=arch == "qwen3", max_position_embeddings=256)
  model = sj.random_model(cfg, seed=seed)
  rng = np.random.default_rng(seed)
  # Random norms and biases (init gives ones / zeros), so a dropped or swapped leaf shows.
  layers = dict(model.params["layers"])
  for name in list(layers):
    if "norm" in name or "bias" in name:
      layers[name] = layers[name] + 0.1 * rng.standard_normal(layers[name].shape).astype(np.float32)
  params = {**model.params, "layers": layers,
            "final_norm": model.params["final_norm"] + 0.1 * rng.standard_normal(48).astype(np.float32)}
  return model.replace(params=params)


@pytest.mark.parametrize("arch,heads,kv,hd,tied,bias", CASES)
def test_export_logits_match_transformers(arch, heads, kv, hd, tied, bias):
  model = _random(arch, heads, kv, hd, tied, bias)
  sd = export.to_hf_state_dict(model)
  assert ("lm_head.weight" in sd) == (not tied)
  assert sd["model.layers.1.self_attn.q_proj.weight"].shape == (heads * hd, 48)
  hf = export.to_hf_model(model)
  ids = np.random.default_rng(1).integers(0, 97, size=(2, 11))
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids)).logits.numpy()
  ours = np.asarray(sj.logits(model, ids))
  assert np.max(np.abs(ours - ref)) <= 1e-4


@pytest.mark.parametrize("arch,heads,kv,hd,tied,bias", CASES)
def test_save_pretrained_round_trip(tmp_path, arch, heads, kv, hd, tied, bias):
  model = _random(arch, heads, kv, hd, tied, bias, seed=3)
  export.to_hf_model(model).save_pretrained(tmp_path)
  back = sj.load_model(str(tmp_path))
  assert back.config == model.config
  a = export.to_hf_state_dict(model)
  b = export.to_hf_state_dict(back)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_hf_config_dict_round_trips_through_loader(tmp_path):
  import json
  from seekjax.models import loaders
  model = _random("qwen2", 4, 2, 12, False, True)
  (tmp_path / "config.json").write_text(json.dumps(export.hf_config_dict(model.config)))
  assert loaders.config_from_hf(str(tmp_path)) == model.config


def test_export_rejects_unrepresentable_configs():
  cfg = sj.ModelConfig(arch="qwen2", vocab_size=97, hidden_size=48, num_layers=1, num_heads=4,
                       num_kv_heads=2, head_dim=16, intermediate_size=80, qkv_bias=True)
  with pytest.raises(ValueError, match="head_dim"):
    export.hf_config_dict(cfg)
