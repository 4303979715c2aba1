"""The PyTorch peer of `benches/train.rs`: the same GRPO step on the same SmolLM2-135M f32
directory, as TRL computes it (logits only at the kept positions, `logits_to_keep`), eager, CPU.

Started once by the benchmark; reads a step count N per stdin line, runs N steps and answers one
JSON line: {"seconds": [per-step wall times], "peak_rss_bytes": ru_maxrss}. Inputs are built
exactly as the Rust side builds them.
"""
import json
import resource
import sys
import time

import torch
from transformers import AutoModelForCausalLM

BATCH, LENGTH, KEEP, TEMPERATURE, LR = 8, 256, 180, 0.7, 1e-6


def inputs(vocab):
    ids = torch.tensor([[(j * 31 + i * 17 + 5) % (vocab - 3) + 3 for j in range(LENGTH)] for i in range(BATCH)])
    adv = torch.tensor([0.9 if i % 2 == 0 else -0.9 for i in range(BATCH)])
    return ids, adv


def main():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids, adv = inputs(model.config.vocab_size)
    attn = torch.ones_like(ids)

    def step():
        # Positions LENGTH-KEEP-1 .. LENGTH-2 predict the last KEEP tokens.
        logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=KEEP + 1).logits[:, :-1, :]
        logp = torch.log_softmax(logits.float() / TEMPERATURE, dim=-1).gather(-1, ids[:, -KEEP:].unsqueeze(-1)).squeeze(-1)
        old = logp.detach()
        coef_1 = torch.exp(logp - old)
        coef_2 = torch.clamp(coef_1, 0.8, 1.2)
        per_token = -torch.min(coef_1 * adv.unsqueeze(1), coef_2 * adv.unsqueeze(1))
        loss = per_token.sum() / per_token.numel()  # dapo: every kept position is a loss token
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        n = int(line)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"seconds": times, "peak_rss_bytes": rss}), flush=True)


if __name__ == "__main__":
    main()
