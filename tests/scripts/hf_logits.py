"""Loads a trained flywheel model directory with transformers (as a user would) and prints, as
JSON, the logits of a fixed 8-token sequence: `tests/train.rs` compares them with tch's."""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
model.eval()
ids = torch.tensor([[1, 5, 9, 33, 70, 2, 11, 200]])
with torch.no_grad():
    logits = model(input_ids=ids).logits
print(json.dumps(logits.reshape(-1).tolist()))
