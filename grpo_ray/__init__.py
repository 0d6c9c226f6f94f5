"""grpo_ray: GRPO fine-tuning of language models for reasoning, on Ray.

Kept import-free on purpose: ``import grpo_ray.algo`` must not pull in ray, vllm or deepspeed.
"""

import logging

__version__ = "0.1.0"

# bitsandbytes (imported by PEFT whenever it is installed) tries, on CPUs with AVX-512 BF16, to fetch
# an optional 4-bit matmul kernel from the Hugging Face hub at import time, and warns on stderr when it
# cannot; its own kernels are used instead. That warning would be the first line of every command's
# output (and of every one-line error) on such machines, so it is kept to real errors.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
