"""Greedy generation with onnxruntime-genai over an exported folder, printing the new token ids.

Usage: genai_greedy.py ONNX_DIR MAX_NEW_TOKENS ID [ID ...]
Prints one JSON list of generated ids (without the prompt). Used by tests/export.rs to check that
an exported folder is a valid onnxruntime-genai model whose greedy output equals ours.
"""

import json
import sys

import onnxruntime_genai as og


def main():
    folder, max_new = sys.argv[1], int(sys.argv[2])
    prompt = [int(x) for x in sys.argv[3:]]
    model = og.Model(folder)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + max_new)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt)
    out = []
    while not gen.is_done() and len(out) < max_new:
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
