"""How svdrender renders fast or in little memory, split by concern; importing the package imports nothing.

- profiles: profile names, the recipe's request, the record sidecars keep, and `auto`'s cost model (torch-free)
- settings: what each profile turns on, resolved with the recipe's explicit choices (torch-free)
- rewrites: module rewrites of diffusers' SVD blocks (torch)
- geglu, geglu_kernel: the fused GEGLU projection, a Triton kernel behind its self-check (torch, Triton on Hopper)
- runtime: applying settings to a loaded pipeline, torch.compile and its cache, the per-call context (torch)
"""
