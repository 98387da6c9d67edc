"""Speed of a training step, one concern a module: `meter` (step-time split, tokens/s, peak memory, MFU),
`compilation` (torch.compile of the per-layer blocks), `cuda_graph` (forward + backward replayed from a CUDA
graph). docs/performance.md says when each is on."""
