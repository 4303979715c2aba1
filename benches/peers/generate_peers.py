"""Peer throughput for benches/generate.rs: the same model, prompt and settings (prompt about 80
tokens, 128 new tokens, temperature 1.0, no top-k/top-p, EOS ignored) through Hugging Face
transformers `generate` and onnxruntime-genai, at batch 1 and 32, on the CPU.

Usage (from the repository root, after `cargo bench --profile dev --bench generate` has created the model):
    .venv/bin/python3 -m pip install transformers          # not part of .ci/setup
    .venv/bin/python3 benches/peers/generate_peers.py [ONNX_DIR ...]
ONNX_DIR defaults to target/bench-models/smollm2/onnx (our export); pass a folder made by
`python -m onnxruntime_genai.models.builder -i target/bench-models/smollm2 -o OUT -p fp32 -e cpu`
to time genai's own graph too. Prints one JSON line per measurement.
"""

import json
import sys
import time

import torch

HF_DIR = "target/bench-models/smollm2"
PROMPT = (
    "Using the numbers [19, 36, 55, 7], create an equation that equals 65. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your reasoning, then give the final equation."
)
NEW = 128
REPEATS = 3


def report(peer, batch, tokens, seconds, **extra):
    print(json.dumps({"peer": peer, "batch": batch, "new_tokens": tokens, "seconds": round(seconds, 3), "tokens_per_second": round(tokens / seconds, 1), **extra}), flush=True)


def transformers_peer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(HF_DIR)
    model = AutoModelForCausalLM.from_pretrained(HF_DIR, dtype=torch.float32).eval()
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    for batch in (1, 32):
        x = ids.repeat(batch, 1)
        model.generate(x, max_new_tokens=4, do_sample=True)  # warm-up
        for r in range(REPEATS):
            torch.manual_seed(r)
            t = time.perf_counter()
            out = model.generate(x, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
            dt = time.perf_counter() - t
            report("transformers", batch, (out.shape[1] - x.shape[1]) * batch, dt, prompt_tokens=x.shape[1])


def genai_peer(folder):
    import onnxruntime_genai as og

    model = og.Model(folder)
    tok = og.Tokenizer(model)
    text = tok.apply_chat_template(json.dumps([{"role": "user", "content": PROMPT}]), add_generation_prompt=True)
    ids = list(tok.encode(text))
    for batch in (1, 32):
        for r in range(REPEATS):
            params = og.GeneratorParams(model)
            params.set_search_options(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_length=len(ids) + NEW, min_length=len(ids) + NEW, batch_size=batch, random_seed=r)
            gen = og.Generator(model, params)
            t = time.perf_counter()
            gen.append_tokens([ids] * batch)
            steps = 0
            while not gen.is_done() and steps < NEW:
                gen.generate_next_token()
                steps += 1
            dt = time.perf_counter() - t
            report("onnxruntime-genai", batch, steps * batch, dt, folder=folder, prompt_tokens=len(ids))


if __name__ == "__main__":
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    transformers_peer()
    for folder in sys.argv[1:] or [HF_DIR + "/onnx"]:
        genai_peer(folder)
