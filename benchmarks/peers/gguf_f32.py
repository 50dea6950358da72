"""Rewrite a (quantized) GGUF as an all-F32 GGUF: same tensor names, order and metadata.

Each tensor is dequantized with `gguf.quants.dequantize` and written back as F32 in the
source's own layout (llama.cpp's q/k row permutation is kept as it is in the file), and
`general.file_type` becomes 0 (ALL_F32). Needs only `gguf` and numpy, so it runs in the
project venv or the llama.cpp peer venv:

  python benchmarks/peers/gguf_f32.py SRC.gguf DST.gguf
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def convert(src: str, dst: str) -> dict:
  import gguf
  t0 = time.perf_counter()
  reader = gguf.GGUFReader(src)
  arch = reader.fields["general.architecture"].contents()
  writer = gguf.GGUFWriter(dst, arch)
  for field in reader.fields.values():
    if field.name.startswith("GGUF.") or field.name == "general.architecture":
      continue  # header fields, and the architecture the writer already wrote
    if field.name == "general.file_type":
      writer.add_key_value(field.name, int(gguf.LlamaFileType.ALL_F32), gguf.GGUFValueType.UINT32)
      continue
    vtype = field.types[0]
    sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
    writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
  types = {}
  for t in reader.tensors:
    types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    w = w.reshape(tuple(reversed([int(d) for d in t.shape])))  # GGUF shapes are innermost-first
    writer.add_tensor(t.name, np.ascontiguousarray(w))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return dict(src=src, dst=dst, tensors=len(reader.tensors), src_types=types,
              seconds=round(time.perf_counter() - t0, 1))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("src")
  ap.add_argument("dst")
  args = ap.parse_args(argv)
  print(convert(args.src, args.dst))


if __name__ == "__main__":
  main()
