"""Bad checkpoints give one clear line naming the file and the problem."""
import json
import os
import shutil

import numpy as np
import pytest

import seekjax as sj
from seekjax.models.errors import ModelLoadError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("hf")
  cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=64)
  transformers.LlamaForCausalLM(cfg).save_pretrained(d)
  return d


def _copy(src, tmp_path):
  dst = tmp_path / "ckpt"
  shutil.copytree(src, dst)
  return dst


def _one_line_error(path, match):
  with pytest.raises(ModelLoadError) as e:
    sj.load_model(str(path))
  msg = str(e.value)
  assert "\n" not in msg and match in msg, msg
  return msg


def test_missing_config(hf_dir, tmp_path):
  d = _copy(hf_dir, tmp_path)
  os.remove(d / "config.json")
  assert "config.json" in _one_line_error(d, "missing config.json")


def test_corrupt_config(hf_dir, tmp_path):
  d = _copy(hf_dir, tmp_path)
  (d / "config.json").write_text('{"model_type": "llama", ')
  _one_line_error(d, "corrupt config.json")


def test_unknown_architecture(hf_dir, tmp_path):
  d = _copy(hf_dir, tmp_path)
  c = json.loads((d / "config.json").read_text())
  c["model_type"] = "mamba"
  (d / "config.json").write_text(json.dumps(c))
  _one_line_error(d, "unknown architecture")


def test_shape_mismatch(hf_dir, tmp_path):
  d = _copy(hf_dir, tmp_path)
  c = json.loads((d / "config.json").read_text())
  c["intermediate_size"] = 40
  (d / "config.json").write_text(json.dumps(c))
  msg = _one_line_error(d, "shape mismatch")
  assert "mlp" in msg


def test_truncated_safetensors(hf_dir, tmp_path):
  d = _copy(hf_dir, tmp_path)
  f = d / "model.safetensors"
  data = f.read_bytes()
  f.write_bytes(data[: len(data) // 2])
  msg = _one_line_error(d, "truncated or corrupt safetensors")
  assert "model.safetensors" in msg


def _tiny_gguf(path, qtype="F32", truncate=False):
  import gguf
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(1)
  w.add_embedding_length(32)
  w.add_feed_forward_length(32)
  w.add_head_count(2)
  w.add_head_count_kv(2)
  w.add_context_length(64)
  w.add_layer_norm_rms_eps(1e-5)
  w.add_rope_freq_base(10000.0)
  w.add_vocab_size(32)
  rng = np.random.default_rng(0)
  ttype = getattr(gguf.GGMLQuantizationType, qtype)

  def add(name, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    if qtype in ("F32", "F16") or len(shape) == 1:
      w.add_tensor(name, a.astype(np.float16) if qtype == "F16" and len(shape) > 1 else a)
    else:
      w.add_tensor(name, gguf.quants.quantize(a, ttype), raw_dtype=ttype)
  add("token_embd.weight", (32, 32))
  add("output_norm.weight", (32,))
  for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
    add(f"blk.0.{n}.weight", (32, 32))
  add("blk.0.attn_norm.weight", (32,))
  add("blk.0.ffn_norm.weight", (32,))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  if truncate:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 600])


def test_gguf_without_tokenizer_loads_weights(tmp_path):
  from seekjax.models import loaders
  p = tmp_path / "m.gguf"
  _tiny_gguf(p, "Q8_0")
  reader = loaders.open_gguf(str(p))
  cfg = loaders.config_from_gguf(reader, p)
  params = loaders.load_gguf_params(reader, p, cfg)
  assert cfg.tie_embeddings and params["layers"]["q"].shape == (1, 32, 32)


def test_truncated_gguf(tmp_path):
  p = tmp_path / "m.gguf"
  _tiny_gguf(p, "F32", truncate=True)
  msg = _one_line_error(p, "truncated or corrupt")
  assert "m.gguf" in msg


def test_unsupported_quantization(tmp_path):
  import gguf
  p = tmp_path / "m.gguf"
  w = gguf.GGUFWriter(str(p), "llama")
  for k, v in dict(block_count=1, embedding_length=32, feed_forward_length=32, head_count=2,
                   head_count_kv=2, vocab_size=32).items():
    getattr(w, f"add_{k}")(v)
  ttype = gguf.GGMLQuantizationType.TQ1_0
  block, size = gguf.GGML_QUANT_SIZES[ttype]
  w.add_tensor("token_embd.weight", np.zeros((32, 256 // block * size), np.uint8), raw_dtype=ttype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  _one_line_error(p, "unsupported quantization type TQ1_0")


def test_not_a_model(tmp_path):
  _one_line_error(tmp_path / "nothing-here", "not an HF checkpoint directory")
