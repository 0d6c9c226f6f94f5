"""How the run that made an adapter (or a fully fine-tuned model) built its prompts, read back from
the ``config.yaml`` it saved beside its checkpoints, so that eval, generate and serve ask the tuned
model the way training did (its system prompt, tag style, demonstration turns and assistant prefix,
and for a run with tools, its rollout kind and tools). A tuned model asked differently looks untrained."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from grpo_ray.data.prompts import PromptRecipe, resolve_system_prompt


@dataclass(frozen=True)
class RunPrompt:
    """The prompt settings of a training run (``data.*`` of its config)."""

    tag_style: str = "reasoning"
    system_prompt: Optional[str] = None  # None: the tag style's default (plus a dataset's instruction line)
    demonstrations: tuple[tuple[str, str], ...] = ()
    assistant_prefix: str = ""
    source: Optional[str] = None  # the config.yaml these came from
    kind: Optional[Any] = None  # the run's rollout kind (a KindSpec): its tools, for eval and generate

    def recipe(self, instruction: str = "") -> PromptRecipe:
        return PromptRecipe(resolve_system_prompt(self.system_prompt, self.tag_style, instruction),
                            self.demonstrations, self.assistant_prefix)


def find_run_config(path: Optional[str]) -> Optional[Path]:
    """The training run's ``config.yaml`` for an adapter or model folder, a checkpoint or an output dir:
    the folder itself or one of its three nearest parents (``out/checkpoints/step-N/adapter``)."""
    if not path:
        return None
    p = Path(path).expanduser()
    if not p.exists():
        return None
    for folder in [p, *list(p.resolve().parents)[:3]]:
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return None


def run_prompt(path: Optional[str]) -> Optional[RunPrompt]:
    """The prompt settings of the run behind ``path`` (see :func:`find_run_config`), or None."""
    from grpo_ray.config import ConfigError, DataConfig, RolloutConfig, migrate_renamed_keys, read_yaml

    found = find_run_config(path)
    if found is None:
        return None
    raw = migrate_renamed_keys(read_yaml(found))
    try:
        data = DataConfig.model_validate(raw.get("data") or {})
        rollout = RolloutConfig.model_validate(raw.get("rollout") or {})
    except (ConfigError, ValueError):
        return None
    kind = None
    if rollout.kind != "single_turn":
        from grpo_ray.rollout.kinds.base import MULTI_TURN_KEYS, KindSpec

        kind = KindSpec(rollout.kind, {key: getattr(rollout, key) for key in MULTI_TURN_KEYS})
    return RunPrompt(data.tag_style, data.system_prompt, tuple(d.as_tuple() for d in data.demonstrations),
                     data.assistant_prefix, str(found), kind)
