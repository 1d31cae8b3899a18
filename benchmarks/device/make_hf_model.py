"""A random-weight Llama-2-7B-shaped bf16 checkpoint for vLLM, with a working tokenizer made from
llama.cpp's SPM vocabulary GGUF, so vLLM serves real text without a download.

    python benchmarks/device/make_hf_model.py OUT_DIR ggml-vocab-llama-spm.gguf
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM


def main(out: Path, vocab: Path) -> None:
    start = time.monotonic()
    config = LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16",
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    del model
    shutil.copy(vocab, out / vocab.name)
    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=vocab.name)
    tokenizer.save_pretrained(out)
    (out / vocab.name).unlink()
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    print(f"{out}: {size / 2**30:.1f} GiB of safetensors in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
