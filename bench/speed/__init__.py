"""`bench.py speed`: synthetic-input throughput, memory and model FLOPs utilisation of the methods.

For each method × image size × batch (× torch.compile), the reference-style `eager` attention
and fgbench's `fused` fast path are measured one right after the other in the same process,
each on a freshly built model with the same weights: training steps (forward, backward, clip,
optimizer) and inference forwards, warm-up excluded, device synchronised, per-step times kept.

Modules, one idea each:

- `workload`: a method's model, recipe and optimizer groups at a size and batch;
- `steps`: the measured training and inference steps (autocast, GradScaler for fp16);
- `timing`: warm-up then timed steps through `bench.meters.StepTimer`;
- `backoff`: out-of-memory retries down timm's `decay_batch_step` schedule;
- `flops`: model MACs from a named counter (DeepSpeed's profiler or torch's FlopCounterMode);
- `peaks`: dense peak TFLOP/s of known GPUs and the MFU formula;
- `datafeed`: `--with-data`, batches from the real loader for the end-to-end ratio;
- `suite`: one case in phases, and the loop over cases;
- `ratios`: fused/eager, method/ViT and loader/synthetic ratios;
- `targets`: the issue's speed targets, checked and printed;
- `output`: file names, CSV/JSON/Markdown and the printed table.
"""
